package main

import (
	"fmt"
	"io"
	"log/slog"
)

// newLogger returns the daemon's logger: key=value text lines (format "text") or one JSON object a
// line ("json"), at level and above.
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
