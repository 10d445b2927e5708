"""Federated training of the stiffness transformer on NVIDIA FLARE: hospitals train together
without sending images out.

Why a package of its own: the sites run the project's own training step on their own exams
(``site``, driven by FLARE's Client API in ``client``); the server averages weights with FLARE's
FedAvg (``controller``) and never sees an image or an identifier (``messages`` says what may
leave a site and checks it on arrival); what sites may share is pooled into an ordinary model
folder (``pooling``, ``ridge``, ``assemble``); ``job`` defines the FLARE job and runs it in
FLARE's simulator. Nothing here opens a network connection: FLARE does all communication.

``nvflare`` is an optional dependency (the ``federated`` extra); only ``job``, ``client`` and
``controller`` import it.
"""
