// Command sessions is the load side of bench/sessions.py: Claude Code-shaped sessions against a
// gateway, and the paced upstream they stream from. Standard library only.
//
//	sessions upstream -listen 127.0.0.1:18090
//	sessions client -target http://127.0.0.1:8787 -sessions 1000 -seconds 60 -key sk-sg-...
//
// The upstream answers POST /v1/messages with an Anthropic event stream shaped like a long coding
// turn: a first event after a model-like delay, then hundreds to thousands of small deltas paced
// like a real model (text, then a tool_use block streamed as input_json_delta), usage in
// message_start (with cache reads) and message_delta. Every event carries the wall-clock time it
// was written (`"x_sent":<unix ns>`), and message_start also when the request arrived
// (`"x_recv"`), so the client measures each event's transit and the time to first byte net of
// the upstream's own wait, on one clock. Added latency is the difference between the same
// measurements through a gateway and straight to the upstream.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sessions upstream|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "upstream":
		upstream(os.Args[2:])
	case "client":
		client(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: upstream or client\n", os.Args[1])
		os.Exit(2)
	}
}

// ---- the upstream -----------------------------------------------------------------------------

type shape struct {
	firstMin, firstMax   time.Duration // before the first event
	eventsMin, eventsMax int           // events per turn
	gapMin, gapMax       time.Duration // between events
}

func upstream(args []string) {
	flags := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := flags.String("listen", "127.0.0.1:18090", "address to serve on")
	firstMin := flags.Duration("first-min", 200*time.Millisecond, "shortest wait before the first event")
	firstMax := flags.Duration("first-max", 600*time.Millisecond, "longest wait before the first event")
	eventsMin := flags.Int("events-min", 300, "fewest events in a turn")
	eventsMax := flags.Int("events-max", 3000, "most events in a turn")
	gapMin := flags.Duration("gap-min", 10*time.Millisecond, "shortest gap between events")
	gapMax := flags.Duration("gap-max", 40*time.Millisecond, "longest gap between events")
	_ = flags.Parse(args)
	s := shape{*firstMin, *firstMax, *eventsMin, *eventsMax, *gapMin, *gapMax}
	server := &http.Server{Addr: *listen, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, s)
	})}
	if err := server.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func between(r *rand.Rand, low, high time.Duration) time.Duration {
	if high <= low {
		return low
	}
	return low + time.Duration(r.Int63n(int64(high-low)))
}

func serve(w http.ResponseWriter, r *http.Request, s shape) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"data":[],"has_more":false}`))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	received := time.Now().UnixNano()
	var request struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(body, &request)
	rng := rand.New(rand.NewSource(received))
	events := s.eventsMin + rng.Intn(s.eventsMax-s.eventsMin+1)
	w.Header().Set("content-type", "text/event-stream; charset=utf-8")
	w.Header().Set("request-id", "req_bench_"+strconv.FormatInt(received, 36))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	time.Sleep(between(rng, s.firstMin, s.firstMax))
	send := func(kind string, data string) bool {
		line := fmt.Sprintf("event: %s\ndata: %s\n\n", kind, data)
		if _, err := io.WriteString(w, line); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	start := fmt.Sprintf(`{"type":"message_start","x_recv":%d,"x_sent":%d,"message":{"id":"msg_bench","type":"message",`+
		`"role":"assistant","model":%q,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":%d,`+
		`"cache_creation_input_tokens":0,"cache_read_input_tokens":%d,"output_tokens":1}}}`,
		received, time.Now().UnixNano(), request.Model, 3+len(body)/40000, len(body)/400)
	if !send("message_start", start) {
		return
	}
	if !send("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) {
		return
	}
	toolAt := events * 4 / 5 // the last fifth of a turn is a tool call, streamed as JSON pieces
	for i := 0; i < events; i++ {
		time.Sleep(between(rng, s.gapMin, s.gapMax))
		sent := time.Now().UnixNano()
		var ok bool
		switch {
		case i < toolAt:
			ok = send("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"x_sent":%d,`+
				`"delta":{"type":"text_delta","text":"the tests pass; "}}`, sent))
		case i == toolAt:
			ok = send("content_block_stop", `{"type":"content_block_stop","index":0}`) &&
				send("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use",`+
					`"id":"toolu_bench","name":"Bash","input":{}}}`) &&
				send("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":1,"x_sent":%d,`+
					`"delta":{"type":"input_json_delta","partial_json":""}}`, sent))
		default:
			ok = send("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":1,"x_sent":%d,`+
				`"delta":{"type":"input_json_delta","partial_json":"{\"command\": \"make "}}`, sent))
		}
		if !ok {
			return
		}
	}
	_ = send("content_block_stop", `{"type":"content_block_stop","index":1}`) &&
		send("message_delta", fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":"tool_use",`+
			`"stop_sequence":null},"usage":{"output_tokens":%d}}`, events/10)) &&
		send("message_stop", `{"type":"message_stop"}`)
}

// ---- the client -------------------------------------------------------------------------------

type sample struct {
	ttfbNet int64   // time to first byte minus the upstream's own wait, ns
	transit []int64 // each delta's transit from the upstream's write to our read, ns
}

type results struct {
	Sessions      int       `json:"sessions"`
	Seconds       float64   `json:"seconds"`
	Turns         int64     `json:"turns"`
	Events        int64     `json:"events"`
	Errors        int64     `json:"errors"`
	ErrorKinds    []string  `json:"errorKinds"`
	TTFBNetMs     quantiles `json:"ttfbNetMs"`
	TransitMs     quantiles `json:"transitMs"`
	ClientCPUSecs float64   `json:"clientCpuSeconds"`
}

type quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

func summarise(values []int64) quantiles {
	if len(values) == 0 {
		return quantiles{}
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	at := func(q float64) float64 { return float64(values[int(q*float64(len(values)-1))]) / 1e6 }
	return quantiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1), N: len(values)}
}

func client(args []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	target := flags.String("target", "http://127.0.0.1:8787", "gateway (or upstream) base URL")
	sessions := flags.Int("sessions", 100, "concurrent sessions")
	seconds := flags.Float64("seconds", 30, "how long to measure (sessions start spread over the first 10%)")
	key := flags.String("key", "", "x-api-key to send")
	bodyMin := flags.Int("body-min", 50_000, "smallest request body, bytes")
	bodyMax := flags.Int("body-max", 400_000, "largest request body, bytes")
	thinkMin := flags.Duration("think-min", 500*time.Millisecond, "shortest pause between turns")
	thinkMax := flags.Duration("think-max", 5*time.Second, "longest pause between turns")
	_ = flags.Parse(args)

	transport := &http.Transport{MaxIdleConnsPerHost: *sessions, MaxConnsPerHost: 0, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}
	httpClient := &http.Client{Transport: transport, Timeout: 10 * time.Minute}
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	padding := bytes.Repeat([]byte("x"), *bodyMax)

	var turns, events, errors atomic.Int64
	var mu sync.Mutex
	var ttfb, transit []int64
	kinds := map[string]bool{}
	var wait sync.WaitGroup
	cpuBefore := cpuSeconds()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for n := 0; n < *sessions; n++ {
		wait.Add(1)
		go func(n int) {
			defer wait.Done()
			rng := rand.New(rand.NewSource(int64(n) + 1))
			time.Sleep(time.Duration(rng.Int63n(int64(time.Duration(*seconds*float64(time.Second)) / 10))))
			session := fmt.Sprintf("bench-session-%06d", n)
			for time.Now().Before(deadline) {
				size := *bodyMin + rng.Intn(*bodyMax-*bodyMin+1)
				got, err := turn(ctx, httpClient, *target, *key, session, padding[:size])
				cut := ctx.Err() != nil // the measurement ended mid-turn: what was read still counts
				if err != nil && !cut {
					errors.Add(1)
					mu.Lock()
					kinds[err.Error()] = true
					mu.Unlock()
					time.Sleep(time.Second)
					continue
				}
				if !cut {
					turns.Add(1)
				}
				events.Add(int64(len(got.transit)))
				mu.Lock()
				if got.ttfbNet != 0 {
					ttfb = append(ttfb, got.ttfbNet)
				}
				transit = append(transit, got.transit...)
				mu.Unlock()
				time.Sleep(between(rng, *thinkMin, *thinkMax))
			}
		}(n)
	}
	wait.Wait()
	out := results{Sessions: *sessions, Seconds: *seconds, Turns: turns.Load(), Events: events.Load(),
		Errors: errors.Load(), TTFBNetMs: summarise(ttfb), TransitMs: summarise(transit),
		ClientCPUSecs: cpuSeconds() - cpuBefore}
	for kind := range kinds {
		out.ErrorKinds = append(out.ErrorKinds, kind)
	}
	sort.Strings(out.ErrorKinds)
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func turn(ctx context.Context, c *http.Client, target, key, session string, padding []byte) (sample, error) {
	body := fmt.Sprintf(`{"model":"claude-opus-5-5","max_tokens":128000,"stream":true,"system":%q,`+
		`"messages":[{"role":"user","content":"run the tests"}]}`, padding)
	request, _ := http.NewRequestWithContext(ctx, http.MethodPost, target+"/v1/messages?beta=true",
		strings.NewReader(body))
	request.Header.Set("content-type", "application/json")
	request.Header.Set("anthropic-version", "2023-06-01")
	request.Header.Set("x-api-key", key)
	request.Header.Set("x-claude-code-session-id", session)
	request.Header.Set("user-agent", "claude-cli/2.1.328 (external, sdk-cli)")
	started := time.Now().UnixNano()
	response, err := c.Do(request)
	if err != nil {
		return sample{}, fmt.Errorf("request: %T", err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return sample{}, fmt.Errorf("status %d", response.StatusCode)
	}
	var got sample
	reader := bufio.NewReaderSize(response.Body, 64*1024)
	completed := false
	for {
		line, err := reader.ReadSlice('\n')
		if err != nil {
			if !completed {
				return got, fmt.Errorf("stream ended early: %T", err)
			}
			return got, nil
		}
		now := time.Now().UnixNano()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		if sent, ok := field(line, `"x_sent":`); ok {
			if recv, isStart := field(line, `"x_recv":`); isStart {
				got.ttfbNet = (now - started) - (sent - recv)
			} else {
				got.transit = append(got.transit, now-sent)
			}
		}
		if bytes.Contains(line, []byte(`"message_stop"`)) {
			completed = true
		}
	}
}

func field(line []byte, name string) (int64, bool) {
	at := bytes.Index(line, []byte(name))
	if at < 0 {
		return 0, false
	}
	rest := line[at+len(name):]
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, false
	}
	value, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return value, err == nil
}

func cpuSeconds() float64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	user, _ := strconv.ParseFloat(fields[11], 64)
	system, _ := strconv.ParseFloat(fields[12], 64)
	return (user + system) / 100
}
