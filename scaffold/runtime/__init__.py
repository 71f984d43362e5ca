"""Code the generated benchmark configs import when they run (named by ``class_path``), never by
scaffold's own stages: importable wherever scaffold is installed, before terratorch-iterate
imports the generated package (it validates every ``class_path`` first)."""
