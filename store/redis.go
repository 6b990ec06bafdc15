package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisConfig configures a Redis store.
type RedisConfig struct {
	// Options are go-redis's client options (address, credentials, TLS).
	Options *redis.Options
	// Prefix starts every key and the notification channel. It must not
	// contain braces: the channel name is the key's hash tag.
	Prefix string
	// Buffer is how many messages each channel keeps (at least 1).
	Buffer int
	// TTL is how long a message is kept (more than 0).
	TTL time.Duration
	// Logger receives one line per outage and per recovery.
	Logger *zap.Logger
	// Now is the clock that ages messages; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Redis is a Store in Redis, shared by every Caddy instance that uses the
// same Redis and prefix. Each channel is a stream, "<prefix>{<channel>}:s",
// beside a small hash "<prefix>{<channel>}:m" holding the channel's epoch
// (new whenever the channel's state is new, for example after Redis lost its
// data), the newest dropped message ID and the last ID; all keys of a
// channel share one hash slot, so Redis Cluster works. Publishing is one Lua
// script: the message, the idempotency key and the notification to every
// instance land together or not at all.
//
// A cursor is "<epoch>-<stream ID>". One subscription per store carries the
// notifications; it keeps the newest cursor of each channel, so a poll
// arriving with the current cursor costs no round trip.
type Redis struct {
	cfg      RedisConfig
	rdb      *redis.Client
	notify   Notifier
	channel  string // notification channel
	log      *zap.Logger
	stop     context.CancelFunc
	done     chan struct{}
	closeErr error
	once     sync.Once

	mu    sync.Mutex
	ps    *redis.PubSub     // the current subscription; Close closes it
	live  bool              // the subscription is up: tails are current
	gen   uint64            // counts subscription changes (see Since)
	tails map[string]string // channel → newest cursor seen in a notification
}

// maxTails bounds the tail cache; when full it is emptied (the cost is one
// round trip per channel).
const maxTails = 100000

// NewRedis returns a Redis store and starts its notification loop, which
// reconnects with backoff. Redis need not be up yet: until it is, calls fail
// with ErrUnavailable.
func NewRedis(cfg RedisConfig, n Notifier) *Redis {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Redis{
		cfg:     cfg,
		rdb:     redis.NewClient(cfg.Options),
		notify:  n,
		channel: cfg.Prefix + "notify",
		log:     cfg.Logger,
		stop:    cancel,
		done:    make(chan struct{}),
		tails:   make(map[string]string),
	}
	go r.listen(ctx)
	return r
}

func (r *Redis) keys(channel string) []string {
	base := r.cfg.Prefix + "{" + channel + "}:"
	return []string{base + "s", base + "m"}
}

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>24, 36)
}

func (r *Redis) nowMS() string { return strconv.FormatInt(r.cfg.Now().UnixMilli(), 10) }

// unavailable wraps errors that mean Redis could not be reached.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !strings.HasPrefix(rerr.Error(), "LOADING") && !strings.HasPrefix(rerr.Error(), "READONLY") {
		return err // Redis answered: a real error
	}
	return errors.Join(ErrUnavailable, err)
}

// luaCommon defines helpers and expires old messages of KEYS[1] (stream)
// into the marker KEYS[2]; it expects now and ttl in milliseconds.
const luaCommon = `
local function split(id)
	local ms, seq = string.match(id, '^(%d+)-(%d+)$')
	return tonumber(ms), tonumber(seq)
end
local function lt(a, b)
	local am, as = split(a)
	local bm, bs = split(b)
	if am ~= bm then return am < bm end
	return as < bs
end
local function epoch(newEpoch)
	local ep = redis.call('HGET', KEYS[2], 'e')
	if not ep then
		ep = newEpoch
		redis.call('HSET', KEYS[2], 'e', ep, 'd', '0-0', 'l', '0-0')
	end
	return ep
end
local function expire(now, ttl)
	local minid = (now - ttl) .. '-0'
	local old = redis.call('XREVRANGE', KEYS[1], '(' .. minid, '-', 'COUNT', 1)
	if #old > 0 then
		redis.call('HSET', KEYS[2], 'd', old[1][1])
		redis.call('XTRIM', KEYS[1], 'MINID', minid)
	end
end
`

// publishScript: KEYS stream, marker, idempotency key (or "");
// ARGV type, data, buffer, ttl, now, new epoch, notification channel, channel,
// GRIP fields ("" for none).
// Returns {duplicate, "epoch id", ms}.
var publishScript = redis.NewScript(luaCommon + `
local buffer, ttl, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if KEYS[3] ~= '' then
	local prev = redis.call('GET', KEYS[3])
	if prev then
		local ep, id, ms = string.match(prev, '^(%S+) (%S+) (%d+)$')
		if tonumber(ms) + ttl > now then return {1, ep .. ' ' .. id} end
	end
end
local ep = epoch(ARGV[6])
expire(now, ttl)
-- The ID's time is the publisher's clock, never behind the last ID, so
-- message times and expiry use one clock.
-- After a delete the stream starts afresh, so the next ID is set here,
-- past the marker's last ID, not left to the stream.
local want = now .. '-*'
local lms, lseq = split(redis.call('HGET', KEYS[2], 'l'))
if lms and lms >= now then want = lms .. '-' .. (lseq + 1) end
local fields = {'t', ARGV[1], 'd', ARGV[2]}
if ARGV[9] ~= '' then fields[5], fields[6] = 'g', ARGV[9] end
local id = redis.pcall('XADD', KEYS[1], want, unpack(fields))
if type(id) == 'table' and id.err then
	id = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
local n = redis.call('XLEN', KEYS[1])
if n > buffer then
	local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', n - buffer)
	redis.call('HSET', KEYS[2], 'd', gone[#gone][1])
	redis.call('XTRIM', KEYS[1], 'MAXLEN', buffer)
end
redis.call('HSET', KEYS[2], 'l', id)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
if KEYS[3] ~= '' then
	redis.call('SET', KEYS[3], ep .. ' ' .. id .. ' ' .. now, 'PX', ttl)
end
redis.call('PUBLISH', ARGV[7], 'p ' .. ep .. '-' .. id .. ' ' .. ARGV[8])
return {0, ep .. ' ' .. id}
`)

// readScript: KEYS stream, marker; ARGV cursor epoch ("" for none), cursor
// id, buffer, ttl, now, new epoch, "1" for Info. Returns {epoch, tail id,
// gap, count, messages}, and for Info the newest message's GRIP fields.
var readScript = redis.NewScript(luaCommon + `
local buffer, ttl, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ep = epoch(ARGV[6])
redis.call('PEXPIRE', KEYS[2], 2 * ttl)
expire(now, ttl)
local tail = redis.call('HGET', KEYS[2], 'l')
local count = redis.call('XLEN', KEYS[1])
if ARGV[1] == '' then
	local g = false
	if ARGV[7] == '1' then -- Info: the newest message's GRIP fields
		local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
		if #last > 0 then
			local f = last[1][2]
			for i = 1, #f, 2 do
				if f[i] == 'g' then g = f[i + 1] end
			end
		end
	end
	return {ep, tail, 0, count, {}, g}
end
if ARGV[1] ~= ep or not split(ARGV[2]) or lt(tail, ARGV[2]) then
	return {ep, tail, 1, count, redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', buffer)}
end
local gap = 0
if lt(ARGV[2], redis.call('HGET', KEYS[2], 'd')) then gap = 1 end
return {ep, tail, gap, count, redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', buffer)}
`)

// deleteScript: KEYS stream, marker; ARGV notification channel, channel, ttl.
// The marker stays, its dropped mark at the last ID, so that cursors from
// before the delete get a gap.
var deleteScript = redis.NewScript(`
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
	redis.call('HSET', KEYS[2], 'd', redis.call('HGET', KEYS[2], 'l'))
	redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[3]))
end
redis.call('PUBLISH', ARGV[1], 'd ' .. ARGV[2])
return n
`)

// Append implements Store.
func (r *Redis) Append(ctx context.Context, channel string, m Message, key string) (Message, bool, error) {
	keys := append(r.keys(channel), "")
	if key != "" {
		keys[2] = r.cfg.Prefix + "{" + channel + "}:i:" + key
	}
	meta, err := encodeMeta(m)
	if err != nil {
		return Message{}, false, err
	}
	res, err := publishScript.Run(ctx, r.rdb, keys,
		m.Type, m.Data, r.cfg.Buffer, r.cfg.TTL.Milliseconds(), r.nowMS(), newEpoch(), r.channel, channel, meta).Slice()
	if err != nil {
		return Message{}, false, unavailable(err)
	}
	ep, id, _ := strings.Cut(res[1].(string), " ")
	m.ID, m.Channel, m.Time = ep+"-"+id, channel, idTime(id)
	dup := res[0].(int64) == 1
	if dup {
		m.Data, m.Type = nil, ""
	} else {
		// The notification comes back later; until then a Since on this
		// instance must already see the message.
		r.setTail(channel, m.ID)
	}
	return m, dup, nil
}

// redisMeta is a message's GRIP fields, in its stream entry's "g" field.
type redisMeta struct {
	PubID     string    `json:"i,omitempty"`
	PrevPubID string    `json:"p,omitempty"`
	Response  *Response `json:"r,omitempty"`
}

// encodeMeta is the "g" field of m: "" when m has no GRIP fields.
func encodeMeta(m Message) (string, error) {
	if m.PubID == "" && m.PrevPubID == "" && m.Response == nil {
		return "", nil
	}
	b, err := json.Marshal(redisMeta{PubID: m.PubID, PrevPubID: m.PrevPubID, Response: m.Response})
	return string(b), err
}

// decodeMeta sets the GRIP fields of m from a "g" field; one that does not
// decode (written by a later version, say) leaves them unset.
func decodeMeta(g string, m *Message) {
	var meta redisMeta
	if json.Unmarshal([]byte(g), &meta) == nil {
		m.PubID, m.PrevPubID, m.Response = meta.PubID, meta.PrevPubID, meta.Response
	}
}

// idTime is the time in a stream ID.
func idTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n).UTC()
}

// splitCursor splits "<epoch>-<ms>-<seq>".
func splitCursor(c string) (epoch, id string) {
	epoch, id, ok := strings.Cut(c, "-")
	if !ok {
		return "", ""
	}
	return epoch, id
}

// Since implements Store.
func (r *Redis) Since(ctx context.Context, channel, cursor string) (Result, error) {
	r.mu.Lock()
	tail, known := r.tails[channel]
	known = known && r.live
	gen := r.gen
	r.mu.Unlock()
	if known && (cursor == "" || cursor == tail) {
		return Result{Cursor: tail}, nil // nothing new: no round trip
	}
	ep, id := splitCursor(cursor)
	if cursor != "" && ep == "" {
		ep = "?" // not ours: a gap
	}
	res, err := readScript.Run(ctx, r.rdb, r.keys(channel),
		ep, id, r.cfg.Buffer, r.cfg.TTL.Milliseconds(), r.nowMS(), newEpoch()).Slice()
	if err != nil {
		return Result{}, unavailable(err)
	}
	epoch := res[0].(string)
	tail = res[1].(string)
	out := Result{Gap: res[2].(int64) == 1}
	for _, e := range res[4].([]any) {
		entry := e.([]any)
		fields := entry[1].([]any)
		msg := Message{ID: epoch + "-" + entry[0].(string), Channel: channel, Time: idTime(entry[0].(string))}
		for i := 0; i+1 < len(fields); i += 2 {
			switch fields[i].(string) {
			case "t":
				msg.Type = fields[i+1].(string)
			case "d":
				msg.Data = []byte(fields[i+1].(string))
			case "g":
				decodeMeta(fields[i+1].(string), &msg)
			}
		}
		out.Messages = append(out.Messages, msg)
	}
	switch {
	case len(out.Messages) > 0:
		out.Cursor = out.Messages[len(out.Messages)-1].ID
	case out.Gap || cursor == "":
		out.Cursor = epoch + "-" + tail
	default:
		out.Cursor = cursor
	}
	// Remember the tail, so the next poll with it costs no round trip; but
	// not if the subscription changed meanwhile (Redis may have been
	// restarted empty: the tail would be of a lost epoch).
	r.rememberTail(gen, channel, epoch+"-"+tail)
	return out, nil
}

// Info implements Store.
func (r *Redis) Info(ctx context.Context, channel string) (Info, error) {
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	res, err := readScript.Run(ctx, r.rdb, r.keys(channel),
		"", "", r.cfg.Buffer, r.cfg.TTL.Milliseconds(), r.nowMS(), newEpoch(), "1").Slice()
	if err != nil {
		return Info{}, unavailable(err)
	}
	cursor := res[0].(string) + "-" + res[1].(string)
	r.rememberTail(gen, channel, cursor)
	info := Info{Channel: channel, Cursor: cursor, Messages: int(res[3].(int64))}
	if len(res) > 5 {
		if g, ok := res[5].(string); ok {
			var last Message
			decodeMeta(g, &last)
			info.LastPubID = last.PubID
		}
	}
	return info, nil
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, channel string) (bool, error) {
	n, err := deleteScript.Run(ctx, r.rdb, r.keys(channel), r.channel, channel, r.cfg.TTL.Milliseconds()).Int64()
	r.mu.Lock()
	delete(r.tails, channel) // even on error: the delete may have happened
	r.mu.Unlock()
	if err != nil {
		return false, unavailable(err)
	}
	return n > 0, nil
}

// Channels is how many channels this instance keeps a tail for.
func (r *Redis) Channels() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tails)
}

// Live reports whether the notification subscription is up.
func (r *Redis) Live() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

// Close stops the notification loop and closes the connections.
func (r *Redis) Close() error {
	r.once.Do(func() {
		r.stop()
		// Receive does not watch its context: closing the subscription
		// is what ends a blocked read.
		r.mu.Lock()
		if r.ps != nil {
			r.ps.Close()
		}
		r.mu.Unlock()
		<-r.done
		r.closeErr = r.rdb.Close()
	})
	return r.closeErr
}

// listen keeps one subscription to the notification channel: it updates the
// tails, wakes local polls, and after an outage wakes every held poll so it
// reads what was published meanwhile.
func (r *Redis) listen(ctx context.Context) {
	defer close(r.done)
	backoff := 50 * time.Millisecond
	everUp, down := false, false
	for ctx.Err() == nil {
		ps := r.rdb.Subscribe(ctx, r.channel)
		r.mu.Lock()
		if ctx.Err() != nil { // Close ran before r.ps was set
			r.mu.Unlock()
			ps.Close()
			break
		}
		r.ps = ps
		r.mu.Unlock()
		for ctx.Err() == nil {
			msg, err := ps.Receive(ctx)
			if err != nil {
				break
			}
			switch m := msg.(type) {
			case *redis.Subscription:
				r.mu.Lock()
				r.live = true
				r.gen++
				r.mu.Unlock()
				backoff = 50 * time.Millisecond
				if down {
					r.log.Info("redis store reconnected; waking held polls to catch up", zap.String("address", r.cfg.Options.Addr))
					r.notify.WakeAll()
				} else if !everUp {
					r.log.Debug("redis store subscribed", zap.String("address", r.cfg.Options.Addr))
				}
				everUp, down = true, false
			case *redis.Message:
				r.handle(m.Payload)
			}
		}
		ps.Close()
		r.mu.Lock()
		r.ps = nil
		r.live = false
		r.gen++
		clear(r.tails)
		r.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
		if !down {
			r.log.Warn("redis store unreachable; publishes answer 503 until it is back, held polls stay held",
				zap.String("address", r.cfg.Options.Addr))
			down = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// handle applies one notification: "p <cursor> <channel>" or "d <channel>".
func (r *Redis) handle(payload string) {
	op, rest, _ := strings.Cut(payload, " ")
	switch op {
	case "p":
		cursor, channel, _ := strings.Cut(rest, " ")
		r.setTail(channel, cursor)
		r.notify.Wake(channel)
	case "d":
		r.mu.Lock()
		delete(r.tails, rest)
		r.mu.Unlock()
		r.notify.Gone(rest)
	}
}

// rememberTail records the tail a read found, unless the subscription
// changed since the read began (gen).
func (r *Redis) rememberTail(gen uint64, channel, cursor string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen == gen {
		r.setTailLocked(channel, cursor)
	}
}

// setTail records cursor as channel's newest unless a newer one is known.
// Tails are only kept while the subscription is live: otherwise a
// notification could be missed and the tail would go stale.
func (r *Redis) setTail(channel, cursor string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setTailLocked(channel, cursor)
}

func (r *Redis) setTailLocked(channel, cursor string) {
	if !r.live {
		return
	}
	if len(r.tails) >= maxTails {
		clear(r.tails)
		r.gen++ // a Since in flight must not put back a tail older than one just cleared
	}
	if prev, ok := r.tails[channel]; !ok || newer(cursor, prev) {
		r.tails[channel] = cursor
	}
}

// newer reports whether cursor a comes after b (another epoch counts as newer).
func newer(a, b string) bool {
	ae, aid := splitCursor(a)
	be, bid := splitCursor(b)
	if ae != be {
		return true
	}
	ams, aseq, _ := strings.Cut(aid, "-")
	bms, bseq, _ := strings.Cut(bid, "-")
	am, _ := strconv.ParseUint(ams, 10, 64)
	bm, _ := strconv.ParseUint(bms, 10, 64)
	if am != bm {
		return am > bm
	}
	as, _ := strconv.ParseUint(aseq, 10, 64)
	bs, _ := strconv.ParseUint(bseq, 10, 64)
	return as > bs
}

var _ Store = (*Redis)(nil)
