package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// loadResult counts what the clients of one pipeline saw.
type loadResult struct {
	requests, failed int64
	reasons          map[string]int64 // why requests failed
}

// load runs conns clients against addr (Host host) until stop is closed
// and returns their counts. Each client sends its next request as soon as
// the previous one is done, on its own connection (keepAlive) or on a
// new one each time; a failed client waits a moment before the next
// request, so a proxy that is down yields a bounded count, not a spin.
func load(addr, host string, conns int, keepAlive bool, stop <-chan struct{}) loadResult {
	var (
		requests, failed atomic.Int64
		mu               sync.Mutex
		reasons          = map[string]int64{}
		wg               sync.WaitGroup
	)
	for range conns {
		wg.Go(func() {
			c := newClient(addr, host, "", keepAlive)
			defer c.close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				why := c.do()
				requests.Add(1)
				if why == "" {
					continue
				}
				failed.Add(1)
				mu.Lock()
				reasons[why]++
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	return loadResult{requests: requests.Load(), failed: failed.Load(), reasons: reasons}
}
