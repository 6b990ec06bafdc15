// Command build-caddy builds a Caddy binary with this plugin, as xcaddy.json
// (the build manifest) says: Caddy's version, xcaddy's version, the output
// path and the plugins with their local replacements. xcaddy reads no config
// file itself, so this program turns the manifest into one xcaddy command:
//
//	go run ./cmd/build-caddy            # reads ./xcaddy.json
//	go run ./cmd/build-caddy -n         # prints the command only
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

type manifest struct {
	Caddy   string `json:"caddy"`
	Xcaddy  string `json:"xcaddy"`
	Output  string `json:"output"`
	Plugins []struct {
		Module  string `json:"module"`
		Version string `json:"version"`
		Replace string `json:"replace"`
	} `json:"plugins"`
}

func main() {
	path := flag.String("f", "xcaddy.json", "the build manifest")
	dry := flag.Bool("n", false, "print the xcaddy command, do not run it")
	flag.Parse()
	if err := run(*path, *dry); err != nil {
		fmt.Fprintln(os.Stderr, "build-caddy:", err)
		os.Exit(1)
	}
}

func run(path string, dry bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if m.Caddy == "" || m.Xcaddy == "" {
		return fmt.Errorf("%s: caddy and xcaddy versions are required", path)
	}
	if m.Output == "" {
		m.Output = "./caddy"
	}
	base := filepath.Dir(path)
	args := []string{"run", "github.com/caddyserver/xcaddy/cmd/xcaddy@" + m.Xcaddy, "build", m.Caddy, "--output", m.Output}
	for _, p := range m.Plugins {
		with := p.Module
		if p.Version != "" {
			// An explicit version: the module proxy refuses to list
			// versions of an unpublished module, the replace is used.
			with += "@" + p.Version
		}
		if p.Replace != "" {
			dir, err := filepath.Abs(filepath.Join(base, p.Replace))
			if err != nil {
				return err
			}
			with += "=" + dir
		}
		args = append(args, "--with", with)
	}
	fmt.Println("go " + strings.Join(args, " "))
	if dry {
		return nil
	}
	cmd := exec.Command("go", args...)
	// xcaddy makes its own module in a temp dir, with the plugin as a
	// replace: the repository's go.work (examples/, bench/) is no part of
	// that build, whatever GOWORK the caller has.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
