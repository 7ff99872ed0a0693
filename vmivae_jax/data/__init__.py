"""Datasets and image transforms: files to arrays, pixel scaling, random warps."""
