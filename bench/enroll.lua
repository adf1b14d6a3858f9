-- wrk script of bench/load.sh: POST /classes, each request a new student,
-- courses taken round-robin over 1..COURSES (the courses load.sh created).
-- The same script drives the echo server, which takes any course id.
--
-- Environment: COURSES (default 100), RUN_TAG (makes the names new to a
-- server that already has students; default "load").

local courses = tonumber(os.getenv("COURSES") or "100")
local tag = os.getenv("RUN_TAG") or "load"
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function request()
   counter = counter + 1
   local body = string.format(
      '{"courseId":%d,"student":"%s-%d-%d","payAccount":"4242424242424242","addr":"Seoul"}',
      counter % courses + 1, tag, tid, counter)
   return wrk.format("POST", "/classes", headers, body)
end
