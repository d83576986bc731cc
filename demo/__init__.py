"""The IfNotPresent drift experiment on two local containerd "nodes": `make demo`."""
