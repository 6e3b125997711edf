//go:build tools

// Package tools pins Gitea's main package so `go mod tidy` keeps its dependencies.
package tools

import _ "gitea.dev"
