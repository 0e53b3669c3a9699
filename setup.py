"""Installs csa_tf: class-specific affinity guided multimodal unpaired segmentation."""
import setuptools

setuptools.setup(
    name="csa_tf",
    version="0.1.0",
    description=("Class-specific affinity (CSA) guided multimodal unpaired segmentation "
                 "(Chen et al., MICCAI 2020) in TensorFlow 2 / Keras 3."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["csa_tf", "csa_tf.*", "data_prep",
                                               "data_prep.*", "experiments",
                                               "experiments.*", "benchmarks",
                                               "benchmarks.*"]),
    package_data={"experiments": ["*.flags"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow==2.21.0",
        "numpy",
        "nibabel",
        "scipy",
        # Pinned: its ASSD definition changed across versions (REFERENCE.md section 6).
        "medpy==0.5.2",
        "absl-py",
        # tf.summary needs it for the TensorBoard scalars and images; TF 2.21 no longer
        # installs it.
        "tensorboard",
        # PNG figures and TensorBoard image summaries (csa_tf.visualize); writing PNGs by
        # hand would be more code than the dependency.
        "matplotlib",
    ],
    extras_require={
        # The network's layers are keras.ops only, so CsaNet also runs under
        # KERAS_BACKEND=jax (the GPU benchmark's engine where TensorFlow cannot run;
        # tests/jax_backend_test.py checks it on CPU).
        "jax": ["jax[cpu]"],
        "dev": ["pytest", "pytest-xdist", "hypothesis", "jax[cpu]"],
    },
)
