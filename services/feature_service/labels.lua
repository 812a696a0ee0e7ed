-- Folds delayed labels into the terminal fraud sets, in one round trip.
-- ARGV: n, ttl_s, then per label transaction_id, fraud ("1" or "0"). A "0" withdraws an earlier fraud report.
-- Reply: {accepted, unknown}; unknown = the transaction was never seen or its routing entry expired.
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local accepted, unknown = 0, 0
for i = 0, n - 1 do
  local txid, fraud = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local meta = redis.call('GET', 'x:' .. txid)
  if meta then
    local tid, ts = string.match(meta, '^(.*)|([^|]*)$')
    if fraud == '1' then
      redis.call('ZADD', 'f:' .. tid, ts, txid)
      redis.call('EXPIRE', 'f:' .. tid, ttl)
    else
      redis.call('ZREM', 'f:' .. tid, txid)
    end
    accepted = accepted + 1
  else
    unknown = unknown + 1
  end
end
return {accepted, unknown}
