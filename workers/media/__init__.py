"""Reading media: where it may come from (fetch), and turning bytes into frames (image, video)."""
