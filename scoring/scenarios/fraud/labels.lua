-- Folds delayed labels into the terminals' time buckets of one hash-tag shard, in one round trip.
-- KEYS[1]: the shard's tag ("{t3}"), for routing only. ARGV: tag, ring slots, then per label transaction_id,
-- fraud ("1"/"0");
-- a "0" withdraws an earlier fraud report. A transaction's first label makes it labelled in its bucket; a label is
-- counted once whatever how often it is re-sent: the transaction's routing entry remembers its current label.
-- Reply: one byte per label, '1' where this shard knows the transaction (a transaction lives in the shard of its
-- terminal, which a label does not name: with several shards, every shard is asked).
local tag = ARGV[1]
local SLOTS, ENTRY = tonumber(ARGV[2]), 16
local n = (#ARGV - 2) / 2
local found = {}
for i = 1, n do
  local txid, fraud = ARGV[2 * i + 1], ARGV[2 * i + 2]
  local rkey = 'x2' .. tag .. ':' .. txid  -- layout 2 (redis_state.STATE_LAYOUT)
  local route = redis.call('GET', rkey)
  if route then
    local ring_key, bucket_s, flag = string.match(route, '^(.*)|(%-?%d+)|([01-])$')
    if flag ~= fraud then
      local bucket = tonumber(bucket_s)
      local ring = redis.call('GET', ring_key)
      if ring then
        local pos = (bucket % SLOTS) * ENTRY + 1
        local stamp, count, labelled, frauds = struct.unpack('<iiii', ring, pos)
        if stamp == bucket then
          if flag == '-' then
            labelled = labelled + 1
            if fraud == '1' then frauds = frauds + 1 end
          else
            frauds = frauds + (fraud == '1' and 1 or -1)
          end
          redis.call('SETRANGE', ring_key, pos - 1, struct.pack('<iiii', stamp, count, labelled, frauds))
        end
      end
      redis.call('SET', rkey, ring_key .. '|' .. bucket_s .. '|' .. fraud, 'KEEPTTL')
    end
    found[i] = '1'
  else
    found[i] = '0'
  end
end
return table.concat(found)
