// Command pause is the pod sandbox ("infra") container's process: it holds the pod's namespaces
// open, reaps orphaned children when the pod shares its PID namespace, and exits 0 on SIGTERM or
// SIGINT. Built static (CGO_ENABLED=0) by tests/cluster/images, like registry.k8s.io/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
