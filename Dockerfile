# The cube worker as an image. It needs no registry to build: `make image` first builds the
# static binary bin/cube, then this file copies it into an empty image.
# Run it with the host's Docker socket mounted and a token (it listens on every address of its
# container, which the worker refuses to do without authentication), a fixed name and its state
# on a volume, so that a new container takes up the tasks of the one it replaces (README.md), and
# /run/cube, which holds the lock that keeps one worker per name on the Engine (mounted, it is
# shared with the host's other workers):
#   docker run -d --name cube-worker -e CUBE_TOKEN="$(cat cube-token)" \
#     -v /var/run/docker.sock:/var/run/docker.sock -v cube-state:/var/lib/cube \
#     -v /run/cube:/run/cube -p 127.0.0.1:5556:5556 cube-worker \
#     worker --host 0.0.0.0 --port 5556 --name "$(hostname)" --data-dir /var/lib/cube
FROM scratch
COPY bin/cube /cube
EXPOSE 5556
# The worker's state (its tasks, accepted events and stops): keep this volume across containers.
VOLUME ["/var/lib/cube"]
ENTRYPOINT ["/cube"]
CMD ["worker", "--host", "0.0.0.0", "--port", "5556"]
