// etcd for the test suite's control plane, built from the Go module proxy: the same entry point
// as etcd's own server/main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
