"""Image metadata: one module per format (a1111: the `parameters` infotext; dream: the guide's
`Dream` and `sd-metadata` chunks), a bounded PNG chunk reader (png_chunks) and the reader that
turns a PNG into a request (reader). Stdlib only: the worker saves images with it too."""
