-- GET <prefix><id> for a random id in 1..N (all seeded, all live). For
-- /api/v1/orders/ order-service embeds the order's user, fetched from
-- user-service: one request crosses both services.
-- args: N (seeded rows), prefix (/api/v1/users/ or /api/v1/orders/)
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local prefix

function init(args)
  seeded_init(args)
  prefix = args[2]
end

function request()
  return wrk.format("GET", prefix .. math.random(1, seeded), auth_headers)
end
