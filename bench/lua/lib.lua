-- Shared by every scenario script (each loads it with dofile).
--
-- wrk runs one Lua state per thread plus a main one: setup() runs in the main
-- state once per thread and hands each thread its number (`tid`); init() in each
-- thread seeds its own random numbers; done() runs in the main state at the end
-- and prints one line, `BENCH_RESULT {json}`, that bench/bench.py parses.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

-- Every request carries the run's admin token (BENCH_TOKEN), as a client reuses
-- its token for its lifetime.
auth_headers = {}
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then auth_headers["Authorization"] = "Bearer " .. token end
json_headers = { ["Content-Type"] = "application/json" }
for name, value in pairs(auth_headers) do json_headers[name] = value end

-- Call from init(args): seeds math.random per thread (wall clock + thread number).
function bench_init()
  local clock = math.floor(os.clock() * 1e6)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + clock)
  -- LuaJIT's first values after seeding are poorly mixed; discard a few.
  for _ = 1, 10 do math.random() end
end

-- Integer argument `i` of the script (after wrk's `--`), or `default`.
function int_arg(args, i, default)
  local v = tonumber(args[i])
  if v == nil then return default end
  return math.floor(v)
end

-- init(args) of the scenarios over N seeded rows: N is the first argument
-- (default 10000), kept in `seeded`.
function seeded_init(args)
  bench_init()
  seeded = int_arg(args, 1, 10000)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f,"stdev":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, latency.stdev))
end
