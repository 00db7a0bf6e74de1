-- POST /api/v1/users with a unique email per request:
-- w<nonce>-<thread>-<counter>-<random>@bench.test. The nonce is the script's
-- arguments joined (run.sh passes a per-run tag and the phase, w or m), so the
-- warm-up and the measured run never collide.
-- args: tag phase
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local nonce
local counter = 0

function init(args)
  bench_init()
  nonce = (args[1] or tostring(os.time())) .. (args[2] or "")
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"email":"w%s-%d-%d-%d@bench.test","name":"Bench User %d","age":%d}',
    nonce, tid, counter, math.random(1, 999999), counter, math.random(1, 150))
  return wrk.format("POST", "/api/v1/users", json_headers, body)
end
