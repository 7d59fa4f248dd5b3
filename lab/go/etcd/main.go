// Command etcd is upstream etcd's own main (go.etcd.io/etcd/v3/main.go):
// the server module's etcdmain, built here from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
