"""Benchmark manifests, installed as the package data ``tcs_fewshot.manifests``.

``<benchmark>/<scheme>.json`` files written by ``python -m data_manifests.build.splits``;
read them with :func:`tcs_fewshot.data.manifests.load_manifest`.
"""
