"""Train a robust classifier: ``python train.py fit --config configs/experiment/digits_smallcnn.yaml``."""

from robustattr.apps.train import train_main

if __name__ == "__main__":
    train_main()
