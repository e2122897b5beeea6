// Command kube-apiserver is k8s.io/kubernetes/cmd/kube-apiserver built as a dependency, so that
// a plain module build works (upstream's own replace directives block `go install`). Flywheel's
// tests run it against a local etcd (see deploy/devkit/src/flywheel_devkit/testing/kube.py).
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
