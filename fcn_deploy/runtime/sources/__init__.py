"""Frame sources, one concept per module: `base` (Frame, Source), `files` (image files, video files), `live`
(cameras and streams: latest frame, time-outs, reconnect with back-off), `opening` (a command-line spec -> a
source: `open_source`, `camera_source`)."""
