"""The CUDA C++ kernel templates, one subpackage per kernel family, and the family registry."""
