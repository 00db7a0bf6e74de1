-- POST /api/v1/orders for a random existing user (id in 1..N). order-service
-- looks the user up in user-service through its circuit breaker; with
-- user-service stopped and the breaker open the order is still created (201,
-- unverified), so 201 is success in both scenarios.
-- args: N (seeded users)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

init = seeded_init

function request()
  local quantity = math.random(1, 5)
  local body = string.format(
    '{"user_id":%d,"product_id":"SKU-%d","quantity":%d,"total_price":%d.%02d}',
    math.random(1, seeded), math.random(1, 100), quantity,
    quantity * math.random(1, 99), math.random(0, 99))
  return wrk.format("POST", "/api/v1/orders", json_headers, body)
end
