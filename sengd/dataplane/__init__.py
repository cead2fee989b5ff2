"""The I/O shell: epoll loop, sockets, TUN and timers around the sans-IO core."""
