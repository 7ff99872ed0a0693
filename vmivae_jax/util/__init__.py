"""Platform helpers below everything: devices and meshes, processes, files, the console."""
