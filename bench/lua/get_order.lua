-- GET /api/v1/orders/{id} for a random id in 1..N. order-service embeds the
-- order's user, fetched from user-service: one request crosses both services.
-- args: N (seeded orders)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local orders

function init(args)
  bench_init()
  orders = int_arg(args, 1, 10000)
end

function request()
  return wrk.format("GET", "/api/v1/orders/" .. math.random(1, orders))
end
