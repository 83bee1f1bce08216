// Command super-node-standin is a STAND-IN for the ICN Super-Node, not the Super-Node: there is no
// public Super-Node image, so the kind clusters (lab/kind, molecule/kind) run this instead. It does
// only what the chart and the playbooks look at:
//
//   - listens on P2P_PORT (TCP, default 9000) and counts the bytes it receives and sends there;
//   - serves on METRICS_PORT (default 9100) GET /health (liveness, startup), GET /ready (readiness)
//     and GET /metrics (Prometheus text: icn_super_node_network_bytes_total,
//     icn_super_node_shards_resyncing, icn_super_node_standin_info);
//   - writes a heartbeat file to DATA_DIR (default /data) and is Ready only once it could;
//   - when its own image tag (ICN_STANDIN_TAG, set by the image build) ends in "-broken", /ready
//     always answers 503: an upgrade to such a tag fails on the real kubelet's readiness probe.
//
// Helper commands, for tests that exec into the container (the image has no shell):
//
//	super-node-standin fill FILE BYTES   write BYTES bytes (multiple of 1 MiB) to FILE, fsync it
//	super-node-standin size FILE         print FILE's size in bytes
//	super-node-standin dial HOST:PORT    send 64 KiB to a P2P port, read the echo back, print the bytes
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	rxBytes, txBytes atomic.Uint64
	dataOK           atomic.Bool
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	if len(os.Args) > 1 {
		os.Exit(helper(os.Args[1:]))
	}
	tag := env("ICN_STANDIN_TAG", "unknown")
	broken := strings.HasSuffix(tag, "-broken")
	region := env("REGION", "unknown")
	dataDir := env("DATA_DIR", "/data")
	log.Printf("super-node-standin (NOT the ICN Super-Node) tag=%s region=%s broken=%v", tag, region, broken)

	go heartbeat(filepath.Join(dataDir, "standin-heartbeat"), tag)
	p2p, err := net.Listen("tcp", ":"+env("P2P_PORT", "9000"))
	if err != nil {
		log.Fatalf("p2p listener: %v", err)
	}
	go serveP2P(p2p)

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case broken:
			http.Error(w, "stand-in image tag "+tag+" is -broken: never ready", http.StatusServiceUnavailable)
		case !dataOK.Load():
			http.Error(w, "cannot write to "+dataDir, http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ready\n")
		}
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# HELP icn_super_node_network_bytes_total Bytes through the P2P port.\n")
		fmt.Fprintf(w, "# TYPE icn_super_node_network_bytes_total counter\n")
		fmt.Fprintf(w, "icn_super_node_network_bytes_total{direction=\"rx\"} %d\n", rxBytes.Load())
		fmt.Fprintf(w, "icn_super_node_network_bytes_total{direction=\"tx\"} %d\n", txBytes.Load())
		fmt.Fprintf(w, "# HELP icn_super_node_shards_resyncing Shards being resynced (always 0 in the stand-in).\n")
		fmt.Fprintf(w, "# TYPE icn_super_node_shards_resyncing gauge\n")
		fmt.Fprintf(w, "icn_super_node_shards_resyncing 0\n")
		fmt.Fprintf(w, "# HELP icn_super_node_standin_info The stand-in's image tag and region (this is not the Super-Node).\n")
		fmt.Fprintf(w, "# TYPE icn_super_node_standin_info gauge\n")
		fmt.Fprintf(w, "icn_super_node_standin_info{tag=%q,region=%q} 1\n", tag, region)
	})
	srv := &http.Server{Addr: ":" + env("METRICS_PORT", "9100"), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatalf("metrics listener: %v", err)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	log.Printf("stopping")
	srv.Close()
}

// heartbeat writes the time to FILE every 10 s; the pod is Ready only while that works.
func heartbeat(file, tag string) {
	for first := true; ; first = false {
		err := os.WriteFile(file, []byte(time.Now().UTC().Format(time.RFC3339)+" "+tag+"\n"), 0o644)
		if first || (err == nil) != dataOK.Load() {
			log.Printf("heartbeat %s: %v", file, err)
		}
		dataOK.Store(err == nil)
		time.Sleep(10 * time.Second)
	}
}

// serveP2P echoes what it receives, counting it both ways (a stand-in for the libp2p traffic).
func serveP2P(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			log.Printf("p2p accept: %v", err)
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
				n, err := c.Read(buf)
				rxBytes.Add(uint64(n))
				if n > 0 {
					m, _ := c.Write(buf[:n])
					txBytes.Add(uint64(m))
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func helper(args []string) int {
	switch {
	case len(args) == 3 && args[0] == "fill":
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || n < 0 || n%(1<<20) != 0 {
			fmt.Fprintln(os.Stderr, "fill: BYTES must be a non-negative multiple of 1 MiB")
			return 2
		}
		f, err := os.Create(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		block := make([]byte, 1<<20)
		for i := range block {
			block[i] = byte(i * 7)
		}
		for written := int64(0); written < n; written += int64(len(block)) {
			if _, err := f.Write(block); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if err := f.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case len(args) == 2 && args[0] == "dial":
		c, err := net.DialTimeout("tcp", args[1], 10*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		out := make([]byte, 64<<10)
		if _, err := c.Write(out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n, err := io.ReadFull(c, make([]byte, len(out)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(n)
		return 0
	case len(args) == 2 && args[0] == "size":
		st, err := os.Stat(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(st.Size())
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: super-node-standin [fill FILE BYTES | size FILE | dial HOST:PORT]")
	return 2
}
