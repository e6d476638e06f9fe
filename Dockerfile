# The cube worker as an image. It needs no registry to build: `make image` first builds the
# static binary bin/cube, then this file copies it into an empty image.
# Run it with the host's Docker socket mounted and a token (it listens on every address of its
# container, which the worker refuses to do without authentication):
#   docker run -d -e CUBE_TOKEN="$(cat cube-token)" -v /var/run/docker.sock:/var/run/docker.sock \
#     -p 127.0.0.1:5556:5556 cube-worker
FROM scratch
COPY bin/cube /cube
EXPOSE 5556
# The worker's state (its tasks, accepted events and stops): keep this volume across containers.
VOLUME ["/var/lib/cube"]
ENTRYPOINT ["/cube"]
CMD ["worker", "--host", "0.0.0.0", "--port", "5556"]
