"""Scale-out: tenants placed across nodes, with etcd as the control plane.

`contracts` holds the shapes that the control plane, the nodes and the tenant mover agree on;
the modules beside it implement them (see the README's "Running a cluster")."""
