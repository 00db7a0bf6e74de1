-- GET /api/v1/users?search=<word>&page=1&page_size=10 with a random word. Seeded
-- names are "Seed <word> <n>" with <word> one of these eight, so each search
-- matches about one user in eight (1,250 of 10,000) and returns the newest 10
-- plus the total count.
-- args: none
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")

local words = { "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron" }

function init(args)
  bench_init()
end

function request()
  local word = words[math.random(1, #words)]
  return wrk.format("GET", "/api/v1/users?search=" .. word .. "&page=1&page_size=10", auth_headers)
end
