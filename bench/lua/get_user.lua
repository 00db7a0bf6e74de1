-- GET /api/v1/users/{id} for a random id in 1..N (all seeded, all live).
-- args: N (seeded users)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local users

function init(args)
  bench_init()
  users = int_arg(args, 1, 10000)
end

function request()
  return wrk.format("GET", "/api/v1/users/" .. math.random(1, users))
end
