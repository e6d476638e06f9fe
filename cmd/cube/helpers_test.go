package main

import "github.com/docker/docker/api/types/container"

var containerRemoveForce = container.RemoveOptions{Force: true}
