"""Benchmark manifests, installed as the package data ``tcs_fewshot.manifests``.

``<benchmark>/<scheme>.json`` files written by ``python -m tcs_fewshot.data.build_manifests``;
read them with :func:`tcs_fewshot.data.manifests.load_manifest`.
"""
