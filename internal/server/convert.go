package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"time"

	"github.com/wisp-sh/wisp/api"
	"github.com/wisp-sh/wisp/internal/agent/proto"
	"github.com/wisp-sh/wisp/internal/doctor"
	"github.com/wisp-sh/wisp/internal/image"
	"github.com/wisp-sh/wisp/internal/network"
	"github.com/wisp-sh/wisp/internal/sprite"
)

// This file turns the domain's types into the API's (package api) and
// back: the domain and the guest protocol stay behind the server.

func apiSprite(s sprite.Sprite) api.Sprite {
	out := api.Sprite{
		ID: s.ID, Name: s.Name, State: string(s.State), Backend: s.Backend, Accel: s.Accel,
		CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, DiskGiB: s.DiskGiB, Image: s.Image, MAC: s.MAC, Pid: s.Pid,
		CreatedAt: s.CreatedAt, StartedAt: s.StartedAt, LastError: s.LastError, MachineID: s.MachineID,
		Pids: s.Pids, Origin: s.Origin, Env: s.Env, IdleSeconds: s.IdleSeconds, SleptAt: s.SleptAt,
		SleepSynced: s.SleepSynced, Address: s.Address, Policy: apiPolicy(s.Policy, ""), URLPublic: s.URLPublic,
		DiskUsedBytes: s.DiskUsedBytes, NetRxBytes: s.NetRxBytes, NetTxBytes: s.NetTxBytes,
	}
	out.HostUID = s.HostUID
	if w := s.LastWake; w != nil {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		out.LastWake = &api.WakeTimes{At: w.At, TotalMs: ms(w.Total), RestoreMs: ms(w.Restore), HandshakeMs: ms(w.Handshake), KeptSession: w.KeptSession}
	}
	if c := s.Confinement; c != nil {
		out.Confinement = &api.Confinement{Pid: c.Pid, UID: c.UID, GID: c.GID, Root: c.Root, OwnMountNS: c.OwnMountNS,
			Seccomp: c.Seccomp, NoNewPrivs: c.NoNewPrivs, Cgroup: c.Cgroup, CgroupVersion: c.CgroupVersion,
			PidsMax: c.PidsMax, MemoryMax: c.MemoryMax, CPUMax: c.CPUMax, IOMax: c.IOMax, Text: doctor.Describe(*c)}
	}
	if p := s.Pending; p != nil {
		out.Pending = &api.Size{CPUs: p.CPUs, MemoryMiB: p.MemoryMiB, DiskGiB: p.DiskGiB}
	}
	for _, c := range s.Checkpoints {
		out.Checkpoints = append(out.Checkpoints, apiCheckpoint(c))
	}
	for _, sv := range s.Services {
		out.Services = append(out.Services, apiService(sv))
	}
	return out
}

func apiSprites(list []sprite.Sprite) []api.Sprite {
	out := make([]api.Sprite, 0, len(list))
	for _, s := range list {
		out = append(out, apiSprite(s))
	}
	return out
}

func createOptions(r api.CreateRequest) sprite.CreateOptions {
	return sprite.CreateOptions{
		Name: r.Name, CPUs: r.CPUs, MemoryMiB: r.MemoryMiB, DiskGiB: r.DiskGiB, Image: r.Image, Backend: r.Backend,
		Pids: r.Pids, IdleSeconds: r.IdleSeconds, Env: r.Env, Policy: netPolicy(r.Policy),
	}
}

func apiCheckpoint(c sprite.Checkpoint) api.Checkpoint {
	return api.Checkpoint{ID: c.ID, CreatedAt: c.CreatedAt, Comment: c.Comment, Memory: c.Memory, SizeBytes: c.SizeBytes}
}

func apiPolicy(p network.Policy, addr string) api.Policy {
	return api.Policy{Mode: string(p.Mode), Allow: p.Allow, Address: addr}
}

func netPolicy(p api.Policy) network.Policy {
	return network.Policy{Mode: network.Mode(p.Mode), Allow: p.Allow}
}

func apiService(s sprite.Service) api.Service {
	return api.Service{Name: s.Name, Cmd: s.Cmd, Dir: s.Dir, Env: s.Env, User: s.User, Port: s.Port, CreatedAt: s.CreatedAt}
}

func apiServiceStatus(s sprite.ServiceStatus) api.ServiceStatus {
	return api.ServiceStatus{
		Service: apiService(s.Service), State: s.State, Pid: s.Pid, Restarts: s.Restarts, StartedAt: s.StartedAt,
		LastExit: s.LastExit, LogBytes: s.LogBytes, Error: s.Error,
	}
}

func apiImage(i image.Info) api.Image {
	return api.Image{
		Name: i.Name, Built: i.Built, Path: i.Path, SizeBytes: i.SizeBytes, BuiltAt: i.BuiltAt, SHA256: i.SHA256,
		Description: i.Description, Contents: i.Contents, BuildSeconds: i.BuildSeconds, Recipe: apiRecipe(i.Recipe), Key: i.Key,
	}
}

func apiRecipe(r *image.Recipe) *api.Recipe {
	if r == nil {
		return nil
	}
	return &api.Recipe{From: r.From, Run: r.Run, Copy: r.Copy, Sprite: r.Sprite}
}

func imageRecipe(r *api.Recipe) *image.Recipe {
	if r == nil {
		return nil
	}
	return &image.Recipe{From: r.From, Run: r.Run, Copy: r.Copy, Sprite: r.Sprite}
}

func apiProgress(p image.Progress) api.Progress {
	return api.Progress{Step: p.Step, Steps: p.Steps, Phase: p.Phase, Done: p.Done, Total: p.Total, Log: p.Log}
}

func apiFileInfo(f proto.FileInfo) api.FileInfo {
	return api.FileInfo{Name: f.Name, Size: f.Size, Mode: fs.FileMode(f.Mode), ModTime: f.ModTime, IsDir: f.IsDir, Link: f.Link}
}

func (s *Server) doctorReport(ctx context.Context) (api.DoctorReport, error) {
	return DoctorReport(s.Doctor(ctx))
}

// DoctorReport makes a host report (doctor.Report) plain data: it travels
// by its JSON form (the API's names are the report's) and its text as the
// report renders itself.
func DoctorReport(rep any) (api.DoctorReport, error) {
	var out api.DoctorReport
	b, err := json.Marshal(rep)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("doctor report: %w", err)
	}
	if st, ok := rep.(fmt.Stringer); ok {
		out.Text = st.String()
	}
	return out, nil
}
