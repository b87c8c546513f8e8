// Command wisp-agent is the guest agent: PID 1 inside every sprite. In a VM
// it brings the root filesystem up from the initramfs and serves the host
// over a virtio-serial port; under gVisor (--socket) it serves over a unix
// socket the host listens on.
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/wisp-sh/wisp/internal/guest"
)

func main() {
	socket := flag.String("socket", "", "serve over this unix socket (the host listens) instead of a virtio port")
	port := flag.String("port", "wisp.agent", "name of the virtio-serial port")
	hostname := flag.String("hostname", os.Getenv("WISP_HOSTNAME"), "hostname to set (gVisor mode; env WISP_HOSTNAME)")
	machineID := flag.String("machine-id", os.Getenv("WISP_MACHINE_ID"), "machine-id to set (gVisor mode; env WISP_MACHINE_ID)")
	pids := flag.Int("pids", envInt("WISP_PIDS", "wisp_pids"), "process limit of the sprite (env WISP_PIDS, or wisp_pids on the kernel command line); 0: none")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := &guest.Server{Log: log, Reaper: guest.NewReaper()}
	var (
		open func() (io.ReadWriteCloser, error)
		err  error
	)
	if *socket != "" {
		if err := guest.SetIdentity(*hostname, *machineID); err != nil {
			log.Warn("identity", "err", err)
		}
		if err := guest.ConfigureNetwork(os.Getenv("WISP_ADDR"), os.Getenv("WISP_GW")); err != nil {
			log.Warn("network", "err", err)
		}
		open = func() (io.ReadWriteCloser, error) {
			return net.DialTimeout("unix", *socket, 5*time.Second)
		}
	} else {
		if err := guest.InitVM(log, guest.VMConfigFromEnv()); err != nil {
			log.Error("init failed", "err", err)
			// PID 1 must not exit: the kernel would panic and the host
			// would see a dead VM with no reason. Stay up for the console.
			select {}
		}
		srv.Shutdown = guest.ShutdownRoot
		open = guest.OpenVirtioPort(*port)
	}
	if *pids > 0 {
		// After InitVM: the limit's cgroup lives in the switched root's /run.
		if srv.Reaper.Limit, err = guest.NewProcLimit(guest.PidsDir, *pids); err != nil {
			log.Warn("no process limit inside the sprite", "err", err)
		}
	}
	log.Info("wisp-agent ready", "pids", *pids)
	srv.Serve(context.Background(), open)
}

// envInt returns the first of the environment variables that is set, as
// a number (0 if none is).
func envInt(names ...string) int {
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok {
			i, _ := strconv.Atoi(v)
			return i
		}
	}
	return 0
}
