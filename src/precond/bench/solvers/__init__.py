"""Problems of the linear-solvers benchmark (issue 16): Learning-to-Relax sequences, tall least squares."""
