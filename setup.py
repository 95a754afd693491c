"""Installs the deep-candidate-generation training system and its jobs.

Versions are pinned to the set verified to work together (see docs/install.md):
scann[tf] 1.4.2 ships TF ops built for TensorFlow 2.20, and TFRS 0.7.7 needs Keras 2
(tf-keras 2.20).
"""

from setuptools import find_packages, setup

setup(
    name="deep-candidate-generation",
    version="0.1.0",
    description="TF2 training system for sequential recommendation and embedding-based retrieval.",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["common*", "input_pipeline*", "models*", "trainer*", "retrieval*",
                                    "cluster*"]),
    install_requires=[
        "tensorflow==2.20.*",
        "tf-keras==2.20.*",
        "tensorflow-recommenders==0.7.7",
        "scann[tf]==1.4.2",
        "numpy>=1.26,<3",
        "pyarrow>=14",
        "absl-py>=2.1",
        "tqdm>=4.66",
        "starlette>=1.0,<2",
        "uvicorn>=0.30,<1",
    ],
    # PyYAML and jsonschema check the Kubernetes manifests against their schemas; matplotlib
    # draws the benchmarks' figures in docs/.
    extras_require={"test": ["pytest>=8", "pyyaml>=6", "jsonschema>=4.18"],
                    "bench": ["matplotlib>=3.8"]},
    entry_points={
        "console_scripts": [
            "dcg-prepare=input_pipeline.prepare:run",
            "dcg-train=trainer.main:run",
            "dcg-index=retrieval.index_main:run",
            "dcg-serve=retrieval.serve:run",
            "dcg-local-cluster=cluster.local_cluster:run",
        ]
    },
)
