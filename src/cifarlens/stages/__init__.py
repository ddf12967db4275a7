"""The stages that run on a trained run: each reads its inputs and writes its outputs through
the Run, computes with analysis/ and cam/, and draws with figures/. pipeline.py decides their order."""
