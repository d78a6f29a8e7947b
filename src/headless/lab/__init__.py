"""The lab: experiments built on the library, never imported by it.

`reproduce` runs the paper's comparisons (twins at equal GPU time, their evaluations, the merged
report, corpus staging for a GPU machine); `bench` times training steps side by side.  The library
(data, objectives, losses, models, train, export, eval) knows nothing of them: only the CLI and the
package's lazy public API reach in here (tests/test_architecture.py).
"""
