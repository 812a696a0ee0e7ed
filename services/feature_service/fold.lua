-- Folds a micro-batch of events into per-entity state and returns every event's raw aggregates,
-- in one round trip. The aggregates are turned into features by scoring/features.py (shared with training).
--
-- ARGV: n, seq_len, meta_ttl_s, delay_us, seq_risk_window (1-based), n_windows, windows_us..., then per event
--       transaction_id, event_time_us, customer_id, terminal_id, amount (amount as Python's repr).
-- State:  c:<customer>  zset  score=time, member="<amount>|<txid>"       customer windows
--         s:<customer>  list  "<time>|<amount>|<risk>", newest first       recent-event sequence
--         t:<terminal>  zset  score=time, member=txid                      terminal transactions
--         f:<terminal>  zset  score=time, member=txid                      terminal frauds (from labels)
--         x:<txid>      str   "<terminal>|<time>"                          label routing + idempotency
-- Reply: one binary string of little-endian float64, per event:
--        [count_w, sum_w]*n_windows, [tcount_w, tfrauds_w]*n_windows, seq_count, [time, amount, risk]*(seq_len+1)
-- Keys are built from ARGV, so this script targets a single Redis (not Redis Cluster).
local n = tonumber(ARGV[1])
local seq_len = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local delay = tonumber(ARGV[4])
local risk_k = tonumber(ARGV[5])
local nwin = tonumber(ARGV[6])
local wins = {}
for k = 1, nwin do wins[k] = tonumber(ARGV[6 + k]) end
local horizon = wins[nwin]
local base = 6 + nwin
local pack = struct.pack
local fmt = string.format
local out = {}
local unpack = unpack or table.unpack
-- One pack per event row: [count, sum]*nwin, [tcount, tfrauds]*nwin, seq_count, 3*(seq_len+1) sequence values.
local row_fmt = '<' .. string.rep('d', 4 * nwin + 1 + 3 * (seq_len + 1))

for i = 0, n - 1 do
  local o = base + i * 5
  local txid, ts_s, cid, tid, amt_s = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4], ARGV[o + 5]
  local ts = tonumber(ts_s)
  local ckey, skey, tkey, fkey = 'c:' .. cid, 's:' .. cid, 't:' .. tid, 'f:' .. tid
  -- A re-sent event (same id) is read, not folded twice.
  local fresh = redis.call('SET', 'x:' .. txid, tid .. '|' .. ts_s, 'NX', 'EX', ttl)
  if fresh then
    redis.call('ZADD', ckey, ts_s, amt_s .. '|' .. txid)
    redis.call('ZADD', tkey, ts_s, txid)
    redis.call('EXPIRE', ckey, ttl)
    redis.call('EXPIRE', tkey, ttl)
  end

  -- Customer windows (t - w, t]: one range read, summed per window. Entries past the longest window are
  -- trimmed when an event is folded (reads never see them: the range starts inside the window).
  if fresh then redis.call('ZREMRANGEBYSCORE', ckey, '-inf', fmt('%.0f', ts - horizon)) end
  local entries = redis.call('ZRANGEBYSCORE', ckey, fmt('(%.0f', ts - horizon), ts_s, 'WITHSCORES')
  local counts, sums = {}, {}
  for k = 1, nwin do counts[k] = 0; sums[k] = 0.0 end
  for j = 1, #entries, 2 do
    local amount = tonumber(string.match(entries[j], '^([^|]*)'))
    local t = tonumber(entries[j + 1])
    for k = 1, nwin do
      if t > ts - wins[k] then counts[k] = counts[k] + 1; sums[k] = sums[k] + amount end
    end
  end
  local row = {}
  for k = 1, nwin do row[#row + 1] = counts[k]; row[#row + 1] = sums[k] end

  -- Terminal windows (t - d - w, t - d]: labels arrive late, so only the delayed period is used.
  local tend = fmt('%.0f', ts - delay)
  if fresh then
    redis.call('ZREMRANGEBYSCORE', tkey, '-inf', fmt('%.0f', ts - delay - horizon))
    redis.call('ZREMRANGEBYSCORE', fkey, '-inf', fmt('%.0f', ts - delay - horizon))
  end
  local risk = 0.0
  for k = 1, nwin do
    local lo = fmt('(%.0f', ts - delay - wins[k])
    local tc = redis.call('ZCOUNT', tkey, lo, tend)
    local fc = redis.call('ZCOUNT', fkey, lo, tend)
    row[#row + 1] = tc; row[#row + 1] = fc
    if k == risk_k and tc > 0 then risk = fc / tc end
  end

  -- Recent-event sequence, newest first, in arrival order.
  if fresh then
    redis.call('LPUSH', skey, ts_s .. '|' .. amt_s .. '|' .. fmt('%.17g', risk))
    redis.call('LTRIM', skey, 0, seq_len)
    redis.call('EXPIRE', skey, ttl)
  end
  local seq = redis.call('LRANGE', skey, 0, seq_len)
  local seq_vals = {}
  local seq_count = 0
  for j = 1, #seq do
    local st, sa, sr = string.match(seq[j], '^([^|]*)|([^|]*)|([^|]*)$')
    st = tonumber(st)
    if st > ts - horizon and st <= ts then
      seq_count = seq_count + 1
      seq_vals[#seq_vals + 1] = st; seq_vals[#seq_vals + 1] = tonumber(sa); seq_vals[#seq_vals + 1] = tonumber(sr)
    end
  end
  row[#row + 1] = seq_count
  for j = 1, #seq_vals do row[#row + 1] = seq_vals[j] end
  for j = #seq_vals + 1, 3 * (seq_len + 1) do row[#row + 1] = 0.0 end
  out[#out + 1] = pack(row_fmt, unpack(row))
end
return table.concat(out)
