"""Datamodules the generated benchmark configs name by ``class_path``, never used by scaffold's own
stages: importable wherever scaffold is installed, before terratorch-iterate imports the generated
package (it validates every ``class_path`` first). Unlike ``scaffold.runtime``, not copied into the
package: a folder with such tasks needs scaffold installed where it runs."""
