-- The list and search scenarios of bench/scale.sh, over N seeded users (ids
-- 1..N, emails seed<i>@scale.test, names "Seed <word> <token>", each user with
-- two orders). One GET per request:
--   list        /api/v1/users?page_size=10                 (numbered page 1)
--   selective   /api/v1/users?search=<token>&page_size=10   (a random user's name token: one match)
--   broad       /api/v1/users?search=<word>&page_size=10    (one user in eight)
--   deep        /api/v1/users?page_size=10&cursor=<c>       (c: one of the cursors
--                                                            given, deep in the table)
--   orders      /api/v1/orders?user_id=<i>&page_size=10     (random user's orders)
-- args: mode N [cursor...]
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local words = { "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron" }
local mode
local letters = "ghijklmnopqrstuv"

-- The 8-letter name token of user i: the hex digits of (i * 2654435761) mod 2^32
-- written with g..v (exact in a double: i * 2654435761 < 2^53 for i < 3 million).
local function token(i)
  local v = (i * 2654435761) % 4294967296
  local out = {}
  for k = 8, 1, -1 do
    local d = v % 16
    out[k] = letters:sub(d + 1, d + 1)
    v = (v - d) / 16
  end
  return table.concat(out)
end
local cursors = {}

function init(args)
  bench_init()
  mode = args[1]
  seeded = int_arg(args, 2, 10000)
  -- wrk appends the phase (w or m) as the last argument; cursors are the rest.
  for i = 3, #args - 1 do cursors[#cursors + 1] = args[i] end
end

function request()
  local path
  if mode == "list" then
    path = "/api/v1/users?page_size=10"
  elseif mode == "selective" then
    path = "/api/v1/users?page_size=10&search=" .. token(math.random(1, seeded))
  elseif mode == "broad" then
    path = "/api/v1/users?page_size=10&search=" .. words[math.random(1, #words)]
  elseif mode == "deep" then
    path = "/api/v1/users?page_size=10&cursor=" .. cursors[math.random(1, #cursors)]
  elseif mode == "orders" then
    path = "/api/v1/orders?page_size=10&user_id=" .. math.random(1, seeded)
  else
    error("unknown mode " .. tostring(mode))
  end
  return wrk.format("GET", path, auth_headers)
end
