"""Generation quality (FID/KID/precision-recall in a named feature space) and disclosure."""
