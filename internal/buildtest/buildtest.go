// Package buildtest builds this module's commands for end-to-end tests,
// which run them as the real programs they are.
package buildtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build runs go build for the package pkg (as the go command takes it:
// "." or "../msgsvcd", from the test's own folder) into dir/name and returns
// the binary's path. Under the race detector the binary gets it too: the
// build reuses the packages the test compiled, and a race in the program
// fails its exit status.
func Build(dir, pkg, name string) (string, error) {
	path := filepath.Join(dir, name)
	args := []string{"build", "-o", path}
	if Race {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return path, nil
}
