// berth-device-plugin advertises fake GPUs to the real node's kubelet through
// the kubelet's device-plugin gRPC API, as NVIDIA's plugin does for real ones.
//
// The scheduler, the kubelet's allocation and Berth's placement then all see
// `nvidia.com/gpu` capacity on a node that has no GPU; a container that is
// given devices gets NVIDIA_VISIBLE_DEVICES naming them, as with the real
// plugin. Nothing is mounted: there is no device to mount.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func main() {
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name to advertise")
	count := flag.Int("count", 8, "number of fake devices")
	prefix := flag.String("id-prefix", "GPU-berth-fake", "device ID prefix (NVIDIA's are GPU-<uuid>)")
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	flag.Parse()

	p := &plugin{}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("%s-%d", *prefix, i), Health: pluginapi.Healthy})
	}
	sock := filepath.Join(*dir, "berth-"+strings.ReplaceAll(*resource, "/", "-")+".sock")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	kubeletSock := filepath.Join(*dir, "kubelet.sock")
	// The kubelet may start after us, and on start it empties the directory,
	// our socket included: serve and register again until it takes.
	deadline := time.Now().Add(120 * time.Second)
	for {
		server, err := p.serve(sock)
		if err != nil {
			log.Fatalf("serve %s: %v", sock, err)
		}
		if err := register(kubeletSock, filepath.Base(sock), *resource); err != nil {
			server.Stop()
			if time.Now().After(deadline) {
				log.Fatalf("register with the kubelet: %v", err)
			}
			time.Sleep(500 * time.Millisecond)
			continue
		}
		log.Printf("registered %d x %s at %s", *count, *resource, sock)
		deadline = time.Now().Add(120 * time.Second)
		// A restarting kubelet removes every plugin socket; then serve and register again.
		if !waitGone(sock, stop) {
			server.Stop()
			_ = os.Remove(sock)
			return
		}
		log.Printf("socket %s removed (kubelet restart?); registering again", sock)
		server.Stop()
	}
}

func (p *plugin) serve(sock string) (*grpc.Server, error) {
	_ = os.Remove(sock)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return nil, err
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	go func() { _ = server.Serve(lis) }()
	return server, nil
}

func register(kubeletSock, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
	})
	return err
}

// waitGone returns true when sock disappears, false on a stop signal.
func waitGone(sock string, stop <-chan os.Signal) bool {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return false
		case <-tick.C:
			if _, err := os.Stat(sock); os.IsNotExist(err) {
				return true
			}
		}
	}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-stream.Context().Done() // fake devices never change health
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ",")},
		})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
