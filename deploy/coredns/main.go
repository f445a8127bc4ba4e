// berth-coredns is CoreDNS with only the plugins the local real node needs.
//
// Not importing CoreDNS's all-plugins list keeps out every cloud backend and,
// above all, `forward`: this DNS answers for the cluster domain and nothing
// else, so a pod on the air-gapped local node cannot resolve an outside name.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The order CoreDNS's own plugin.cfg gives these plugins (it decides which runs first).
var directives = []string{"reload", "bind", "ready", "health", "errors", "log", "cache", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
