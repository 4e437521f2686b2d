-- wrk load for bench/bench_service.py: POST one fixed body with one credential header.
--
--   wrk -t T -c C -d D -s service_load.lua URL -- BODY_FILE HEADER TOKENS_FILE THREADS MODE
--
-- MODE "once": every request takes the next token of its thread's own slice of TOKENS_FILE
-- (the service refuses a replayed jti, so no token is ever sent twice; a thread that runs out
-- stops, and done() reports it). MODE "same": every request sends the first token (OpenBao's
-- X-Vault-Token). done() prints one "BENCH {json}" line that the Python side reads.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local function read_file(path)
   local handle = assert(io.open(path, "rb"))
   local text = handle:read("*a")
   handle:close()
   return text
end

function init(args)
   body = read_file(args[1])
   header = args[2]
   local total_threads = tonumber(args[4])
   mode = args[5]
   tokens = {}
   local number = 0
   for line in io.lines(args[3]) do
      if line ~= "" then
         if mode == "same" then
            tokens[1] = line
            break
         end
         if number % total_threads == id then
            table.insert(tokens, line)
         end
         number = number + 1
      end
   end
   next_token = 1
   exhausted = 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local token = tokens[next_token]
   if mode == "once" then
      if token == nil then
         exhausted = exhausted + 1
         wrk.thread:stop()
         token = tokens[#tokens]
      else
         next_token = next_token + 1
      end
   end
   local headers = {}
   headers[header] = token
   return wrk.format(nil, nil, headers, body)
end

function done(summary, latency, requests)
   local ran_out = 0
   for _, thread in ipairs(threads) do
      ran_out = ran_out + (thread:get("exhausted") or 0)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
         .. '"p50_us": %d, "p99_us": %d, "max_us": %d, "ran_out": %d}\n',
      summary.requests, summary.duration, errors.status,
      errors.connect + errors.read + errors.write + errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max, ran_out))
end
