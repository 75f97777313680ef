"""Stand-alone scripts copied into a Jetson bundle (they import only tensorrt, numpy and OpenCV)."""
