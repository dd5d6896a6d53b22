/*
 * _fastio: batched, zero-copy socket I/O for the broker's hot path.
 *
 * Why this exists: pyzmq's recv_multipart/send_multipart cost several microseconds of Python per
 * message, and the broker does four of them per job. These functions do the same work in one C
 * call per message (or per batch), on the very socket objects pyzmq created.
 *
 * Rule 1: no routing decisions here. This file only moves frames; the routing core decides.
 *
 * How it reaches libzmq. The types and prototypes are libzmq's own, from zmq.h (Debian's
 * libzmq3-dev; pyzmq's wheels ship no header). The functions must be those of the libzmq that
 * pyzmq runs on, because the socket pointers come from pyzmq (Socket.underlying): a second copy
 * of libzmq linked here would not know them. pyzmq's wheels bundle libzmq under a hashed file
 * name, so the extension is not linked against any libzmq: load() is given the file of pyzmq's
 * compiled backend (zmq.backend.cython._zmq), which the dynamic linker has already loaded, and
 * dlsym() on that handle looks each function up through its dependencies, where pyzmq's own
 * libzmq is. Every pointer is declared with the type of the function in zmq.h (typeof), so a
 * change of signature is a compile error, and load() refuses a libzmq whose major version is not
 * the header's (the ABI of one major version is stable: soname libzmq.so.5).
 *
 * Frames larger than INLINE_MAX come back as Frame objects that keep the zmq_msg_t (no copy) and
 * expose the buffer protocol; sending a Frame uses zmq_msg_copy, which shares the buffer. So a
 * 64 KiB payload crosses the broker without being copied. Smaller frames become bytes: copying a
 * few dozen bytes is cheaper than an object that must be converted for every comparison.
 *
 * Workers use the same calls for their own socket (recv_message, every frame bytes, since the
 * app is promised bytes; send_batch for a reply): pyzmq's recv_multipart and a send per frame
 * cost 5.5 and 2-3 us for a six-frame MDP message, these 0.6 each. The broker also waits here
 * (poll): pyzmq's zmq_poll builds Python lists and tuples on every call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <zmq.h>

/* The most items poll() takes: the broker watches four (two ports, the signal pipe, ZAP). */
#define POLL_MAX 16
#define INLINE_MAX 1024

/* libzmq's functions, typed by zmq.h; set by load(). */
#define ZMQ_FN(name) static __typeof__(&name) p_##name
ZMQ_FN(zmq_msg_init);
ZMQ_FN(zmq_msg_init_size);
ZMQ_FN(zmq_msg_data);
ZMQ_FN(zmq_msg_size);
ZMQ_FN(zmq_msg_more);
ZMQ_FN(zmq_msg_recv);
ZMQ_FN(zmq_msg_send);
ZMQ_FN(zmq_msg_close);
ZMQ_FN(zmq_msg_copy);
ZMQ_FN(zmq_msg_gets);
ZMQ_FN(zmq_poll);
ZMQ_FN(zmq_errno);
ZMQ_FN(zmq_strerror);
ZMQ_FN(zmq_version);
#undef ZMQ_FN
#define p_msg_init p_zmq_msg_init
#define p_msg_init_size p_zmq_msg_init_size
#define p_msg_data p_zmq_msg_data
#define p_msg_size p_zmq_msg_size
#define p_msg_more p_zmq_msg_more
#define p_msg_recv p_zmq_msg_recv
#define p_msg_send p_zmq_msg_send
#define p_msg_close p_zmq_msg_close
#define p_msg_copy p_zmq_msg_copy
#define p_msg_gets p_zmq_msg_gets
#define p_poll p_zmq_poll
#define p_errno p_zmq_errno
#define p_strerror p_zmq_strerror
static int loaded = 0;
/* What a libzmq failure raises: the caller's class (zmq.ZMQError, given to load()), called with
 * the errno; OSError(errno, text) until then. */
static PyObject *error_type = NULL;

/* -- Frame: a received zmq_msg_t, readable through the buffer protocol ----------------------- */

typedef struct {
    PyObject_HEAD
    zmq_msg_t msg;
    Py_ssize_t exports;
} Frame;

static void Frame_dealloc(Frame *self) {
    p_msg_close(&self->msg);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Frame_getbuffer(Frame *self, Py_buffer *view, int flags) {
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "Frame is read-only");
        return -1;
    }
    self->exports++;
    return PyBuffer_FillInfo(view, (PyObject *)self, p_msg_data(&self->msg),
                             (Py_ssize_t)p_msg_size(&self->msg), 1, flags);
}

static void Frame_releasebuffer(Frame *self, Py_buffer *view) { self->exports--; }

static Py_ssize_t Frame_len(Frame *self) { return (Py_ssize_t)p_msg_size(&self->msg); }

static PyObject *Frame_subscript(Frame *self, PyObject *key) {
    /* frame[:4] == b"..." is how protocol/frames.py peeks at headers: answer with a memoryview. */
    PyObject *view = PyMemoryView_FromObject((PyObject *)self);
    if (view == NULL) return NULL;
    PyObject *result = PyObject_GetItem(view, key);
    Py_DECREF(view);
    return result;
}

static PyObject *Frame_bytes(Frame *self, PyObject *unused) {
    return PyBytes_FromStringAndSize(p_msg_data(&self->msg), (Py_ssize_t)p_msg_size(&self->msg));
}

static PyObject *Frame_richcompare(Frame *self, PyObject *other, int op) {
    if (op != Py_EQ && op != Py_NE) Py_RETURN_NOTIMPLEMENTED;
    Py_buffer theirs;
    if (PyObject_GetBuffer(other, &theirs, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    size_t size = p_msg_size(&self->msg);
    int equal = (size_t)theirs.len == size && memcmp(theirs.buf, p_msg_data(&self->msg), size) == 0;
    PyBuffer_Release(&theirs);
    if (op == Py_NE) equal = !equal;
    return PyBool_FromLong(equal);
}

static PyBufferProcs Frame_as_buffer = {
    (getbufferproc)Frame_getbuffer,
    (releasebufferproc)Frame_releasebuffer,
};

static PyMappingMethods Frame_as_mapping = {
    (lenfunc)Frame_len,
    (binaryfunc)Frame_subscript,
    NULL,
};

static PyMethodDef Frame_methods[] = {
    {"__bytes__", (PyCFunction)Frame_bytes, METH_NOARGS, "The frame's content, copied."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FrameType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zmqserver._fastio.Frame",
    .tp_doc = "A received ZeroMQ frame, shared rather than copied.",
    .tp_basicsize = sizeof(Frame),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Frame_dealloc,
    .tp_as_buffer = &Frame_as_buffer,
    .tp_as_mapping = &Frame_as_mapping,
    .tp_richcompare = (richcmpfunc)Frame_richcompare,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_methods = Frame_methods,
};

/* -- helpers ---------------------------------------------------------------------------------- */

static PyObject *set_errno_error(int err) {
    if (error_type != NULL) {
        PyObject *exc = PyObject_CallFunction(error_type, "i", err);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    PyObject *args = Py_BuildValue("(is)", err, p_strerror(err));
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

static PyObject *zmq_error(void) { return set_errno_error(p_errno()); }

static void *socket_handle(PyObject *handle) {
    void *sock = PyLong_AsVoidPtr(handle);
    if (sock == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "null socket handle");
    return sock;
}

#define REQUIRE_LOADED()                                                        \
    if (!loaded) {                                                              \
        PyErr_SetString(PyExc_RuntimeError, "_fastio.load() was not called");   \
        return NULL;                                                            \
    }

/* -- module functions ------------------------------------------------------------------------- */

static PyObject *fastio_load(PyObject *module, PyObject *args) {
    const char *path;
    PyObject *errors = NULL;
    if (!PyArg_ParseTuple(args, "s|O", &path, &errors)) return NULL;
    if (errors == Py_None) errors = NULL;
    if (errors != NULL && !PyCallable_Check(errors)) {
        PyErr_SetString(PyExc_TypeError, "the error type must be callable");
        return NULL;
    }
    /* RTLD_NOLOAD: only a library that is already loaded (pyzmq's backend, imported first);
     * never a second copy. */
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        PyErr_Format(PyExc_ImportError, "pyzmq's backend %s is not loaded: %s", path, dlerror());
        return NULL;
    }
#define SYM(name)                                                                       \
    *(void **)(&p_##name) = dlsym(lib, #name);                                          \
    if (p_##name == NULL) {                                                             \
        PyErr_Format(PyExc_ImportError, "no %s in the libzmq of %s", #name, path);       \
        dlclose(lib);                                                                   \
        return NULL;                                                                    \
    }
    SYM(zmq_msg_init);
    SYM(zmq_msg_init_size);
    SYM(zmq_msg_data);
    SYM(zmq_msg_size);
    SYM(zmq_msg_more);
    SYM(zmq_msg_recv);
    SYM(zmq_msg_send);
    SYM(zmq_msg_close);
    SYM(zmq_msg_copy);
    SYM(zmq_msg_gets);
    SYM(zmq_poll);
    SYM(zmq_errno);
    SYM(zmq_strerror);
    SYM(zmq_version);
#undef SYM
    /* The handle stays open: the functions must outlive this call (pyzmq keeps the library
     * loaded anyway; this reference only makes that explicit). */
    int major, minor, patch;
    p_zmq_version(&major, &minor, &patch);
    if (major != ZMQ_VERSION_MAJOR) {
        PyErr_Format(PyExc_ImportError,
                     "pyzmq runs libzmq %d.%d.%d; this extension was built for libzmq %d.x",
                     major, minor, patch, ZMQ_VERSION_MAJOR);
        return NULL;
    }
    Py_XINCREF(errors);
    Py_XSETREF(error_type, errors);
    loaded = 1;
    Py_RETURN_NONE;
}

/* Receive one whole multipart message without blocking: a list of frames, or None if none.
 * With user_id non-NULL, *user_id receives the connection's ZAP User-Id (a new reference), or
 * None when the peer has none (a NULL-mechanism connection); with peer non-NULL, *peer receives
 * its Peer-Address the same way (the IP address of a tcp peer; for ipc, what libzmq makes of
 * SO_PEERCRED). Both are properties of the message's first frame, read with zmq_msg_gets, one
 * lookup each. Frames over inline_max bytes come back as Frame objects, the others as bytes.
 *
 * At most max_frames frames are kept: the rest of a longer message is read and closed as it
 * comes, one zmq_msg_t reused, with no Python object made for it (a message of a million empty
 * frames must cost the broker no more than one of max_frames). The caller tells a cut message
 * by its length: it asks for one frame more than it accepts. */
/* A message property as bytes (a new reference), or None when the message has none. */
static PyObject *property(zmq_msg_t *msg, const char *name) {
    const char *value = p_msg_gets(msg, name);
    return value ? PyBytes_FromString(value) : Py_NewRef(Py_None);
}

static PyObject *recv_one(void *sock, PyObject **user_id, PyObject **peer, size_t inline_max,
                          size_t max_frames) {
    PyObject *frames = NULL;
    for (;;) {
        zmq_msg_t msg;
        p_msg_init(&msg);
        if (frames != NULL && (size_t)PyList_GET_SIZE(frames) >= max_frames) {
            /* Past the limit: discard. The parts of a multipart message arrive together, so
             * these reads do not block. */
            int more = 1;
            while (more) {
                if (p_msg_recv(&msg, sock, 0) < 0) {
                    int err = p_errno();
                    if (err == EINTR && PyErr_CheckSignals() == 0) continue;
                    p_msg_close(&msg);
                    Py_DECREF(frames);
                    return err == EINTR ? NULL : zmq_error();
                }
                more = p_msg_more(&msg);
            }
            p_msg_close(&msg);
            return frames;
        }
        if (p_msg_recv(&msg, sock, frames == NULL ? ZMQ_DONTWAIT : 0) < 0) {
            int err = p_errno();
            p_msg_close(&msg);
            if (err == EINTR) {
                /* A signal came while libzmq read its command pipe: run the Python handlers
                 * (ours only queue the signal) and read again, as pyzmq does. Not an error. */
                if (PyErr_CheckSignals() == 0) continue;
                Py_XDECREF(frames);
                return NULL;
            }
            if (frames == NULL && err == EAGAIN) Py_RETURN_NONE;
            Py_XDECREF(frames);
            return zmq_error();
        }
        if (frames == NULL && (frames = PyList_New(0)) == NULL) {
            p_msg_close(&msg);
            return NULL;
        }
        if (user_id != NULL && PyList_GET_SIZE(frames) == 0) {
            *user_id = property(&msg, "User-Id");
            if (*user_id != NULL && peer != NULL) *peer = property(&msg, "Peer-Address");
            if (*user_id == NULL || (peer != NULL && *peer == NULL)) {
                p_msg_close(&msg);
                Py_DECREF(frames);
                return NULL; /* the caller drops what was made */
            }
        }
        int more = p_msg_more(&msg);
        size_t size = p_msg_size(&msg);
        PyObject *item;
        if (size <= inline_max) {
            item = PyBytes_FromStringAndSize(p_msg_data(&msg), (Py_ssize_t)size);
            p_msg_close(&msg);
        } else {
            Frame *frame = PyObject_New(Frame, &FrameType);
            if (frame != NULL) {
                memcpy(&frame->msg, &msg, sizeof msg); /* ownership moves into the Frame */
                frame->exports = 0;
            } else {
                p_msg_close(&msg);
            }
            item = (PyObject *)frame;
        }
        if (item == NULL || PyList_Append(frames, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(item);
        if (!more) return frames;
    }
}

/* recv_message(handle) -> the next whole message (every frame bytes), or None at once: a
 * worker's read of its next job, one C call with nothing to unwrap. */
static PyObject *fastio_recv_message(PyObject *module, PyObject *handle) {
    REQUIRE_LOADED();
    void *sock = socket_handle(handle);
    if (sock == NULL) return NULL;
    return recv_one(sock, NULL, NULL, (size_t)-1, (size_t)-1);
}

/* recv_batch(handle, max, with_user_id=False, max_frames=0, with_peer_address=False).
 * Vectorcall (METH_FASTCALL) with its arguments read by hand: PyArg_ParseTupleAndKeywords and
 * the argument tuple it needs cost about as much as receiving a small message, and this runs on
 * every turn of the broker. max_frames > 0 keeps at most that many frames of each message (see
 * recv_one); 0: all. with_peer_address makes each item (frames, User-Id, Peer-Address). */
static PyObject *fastio_recv_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames) {
    static const char *const names[] = {"handle", "max", "with_user_id", "max_frames",
                                        "with_peer_address"};
    PyObject *given[5] = {NULL, NULL, NULL, NULL, NULL};
    if (nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "recv_batch takes 2 to 5 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) given[i] = args[i];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, k));
        if (name == NULL) return NULL;
        int found = 0;
        for (int j = 0; j < 5 && !found; j++) {
            if (strcmp(name, names[j]) != 0) continue;
            if (given[j] != NULL) {
                PyErr_Format(PyExc_TypeError, "recv_batch got %s twice", name);
                return NULL;
            }
            given[j] = args[nargs + k];
            found = 1;
        }
        if (!found) {
            PyErr_Format(PyExc_TypeError, "recv_batch got an unexpected keyword %s", name);
            return NULL;
        }
    }
    if (given[0] == NULL || given[1] == NULL) {
        PyErr_SetString(PyExc_TypeError, "recv_batch needs handle and max");
        return NULL;
    }
    PyObject *handle = given[0];
    Py_ssize_t max = PyNumber_AsSsize_t(given[1], PyExc_OverflowError);
    if (max == -1 && PyErr_Occurred()) return NULL;
    int with_user_id = given[2] == NULL ? 0 : PyObject_IsTrue(given[2]);
    if (with_user_id < 0) return NULL;
    int with_peer = given[4] == NULL ? 0 : PyObject_IsTrue(given[4]);
    if (with_peer < 0) return NULL;
    if (with_peer) with_user_id = 1;
    Py_ssize_t keep = 0;
    if (given[3] != NULL) {
        keep = PyNumber_AsSsize_t(given[3], PyExc_OverflowError);
        if (keep == -1 && PyErr_Occurred()) return NULL;
        if (keep < 0) {
            PyErr_SetString(PyExc_ValueError, "max_frames must be >= 0");
            return NULL;
        }
    }
    size_t max_frames = keep ? (size_t)keep : (size_t)-1;
    REQUIRE_LOADED();
    void *sock = socket_handle(handle);
    if (sock == NULL) return NULL;
    PyObject *batch = PyList_New(0);
    if (batch == NULL) return NULL;
    for (Py_ssize_t i = 0; i < max; i++) {
        PyObject *user_id = NULL, *peer = NULL;
        PyObject *frames = recv_one(sock, with_user_id ? &user_id : NULL,
                                    with_peer ? &peer : NULL, (size_t)INLINE_MAX, max_frames);
        if (frames == NULL) {
            Py_XDECREF(user_id);
            Py_XDECREF(peer);
            Py_DECREF(batch);
            return NULL;
        }
        if (frames == Py_None) {
            Py_DECREF(frames);
            break;
        }
        PyObject *item = frames;
        if (with_user_id) {
            item = with_peer ? PyTuple_Pack(3, frames, user_id, peer)
                             : PyTuple_Pack(2, frames, user_id);
            Py_DECREF(frames);
            Py_DECREF(user_id);
            Py_XDECREF(peer);
            if (item == NULL) {
                Py_DECREF(batch);
                return NULL;
            }
        }
        int rc = PyList_Append(batch, item);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(batch);
            return NULL;
        }
    }
    return batch;
}

/* Send one frame. Returns 0 when sent; -1 with a Python exception set (an object that is not a
 * buffer); -2 when libzmq refused it, with its errno in *err and no exception set, so a batch
 * can note an EHOSTUNREACH or EAGAIN and go on without building an exception per failure. */
static int send_part(void *sock, PyObject *item, int flags, int *err) {
    zmq_msg_t msg;
    if (Py_IS_TYPE(item, &FrameType)) {
        p_msg_init(&msg);
        if (p_msg_copy(&msg, &((Frame *)item)->msg) < 0) {
            *err = p_errno();
            p_msg_close(&msg);
            return -2;
        }
    } else if (PyBytes_CheckExact(item)) {
        /* The common case (every frame under INLINE_MAX): no buffer export, straight copy. */
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        if (p_msg_init_size(&msg, (size_t)len) < 0) {
            *err = p_errno();
            return -2;
        }
        memcpy(p_msg_data(&msg), PyBytes_AS_STRING(item), (size_t)len);
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0) return -1;
        if (p_msg_init_size(&msg, (size_t)view.len) < 0) {
            *err = p_errno();
            PyBuffer_Release(&view);
            return -2;
        }
        memcpy(p_msg_data(&msg), view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    while (p_msg_send(&msg, sock, flags) < 0) {
        int e = p_errno();
        if (e == EINTR && PyErr_CheckSignals() == 0) continue; /* as in recv_one: send again */
        p_msg_close(&msg);
        if (e == EINTR) return -1; /* a signal handler raised */
        *err = e;
        return -2;
    }
    return 0;
}

/* Send [identity, *frames] without blocking; the same return convention as send_part. A ROUTER
 * decides on the first frame (unknown peer, full pipe), so a failure there means nothing was
 * sent. */
static int send_message(void *sock, PyObject *identity, PyObject *frames, int *err) {
    PyObject *seq = PySequence_Fast(frames, "frames must be a sequence");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int rc = send_part(sock, identity, ZMQ_DONTWAIT | (n ? ZMQ_SNDMORE : 0), err);
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++)
        rc = send_part(sock, items[i], ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0), err);
    Py_DECREF(seq);
    return rc;
}

/* send_batch(handles, outbox): send every (port, identity, frames) of outbox on handles[port],
 * in order, without blocking: one C call per loop turn instead of one per message.
 *
 * Returns the messages that could not go as a list of (index in outbox, errno), for EHOSTUNREACH
 * (an unknown peer, under ROUTER_MANDATORY) and EAGAIN (a full pipe): nothing of those was sent,
 * and the rest of the batch still goes, but for later messages to a peer whose pipe was full:
 * those fail with EAGAIN too, unsent, even if the pipe drained meanwhile (libzmq's I/O thread
 * drains it as we go), so that a peer never gets a later message before an earlier one. Any
 * other failure raises at once (see load()); the messages before it were sent, the ones after
 * it were not. */
static PyObject *fastio_send_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "send_batch(handles: tuple, outbox)");
        return NULL;
    }
    PyObject *handles = args[0], *outbox = args[1];
    REQUIRE_LOADED();
    Py_ssize_t nsocks = PyTuple_GET_SIZE(handles);
    void *socks[8];
    if (nsocks > 8) {
        PyErr_SetString(PyExc_ValueError, "at most 8 sockets");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nsocks; i++)
        if ((socks[i] = socket_handle(PyTuple_GET_ITEM(handles, i))) == NULL) return NULL;
    PyObject *seq = PySequence_Fast(outbox, "outbox must be a sequence");
    if (seq == NULL) return NULL;
    PyObject *failed = NULL; /* made at the first failure: most batches have none */
    PyObject *full = NULL;   /* (port, identity) of the peers whose pipe was full */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "outbox items must be (port, identity, frames)");
            goto error;
        }
        Py_ssize_t port = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 0));
        if (port == -1 && PyErr_Occurred()) goto error;
        if (port < 0 || port >= nsocks) {
            PyErr_Format(PyExc_ValueError, "port %zd out of range", port);
            goto error;
        }
        int err = 0, rc = -2;
        PyObject *peer = NULL;
        if (full != NULL) { /* rare: after a full pipe in this batch */
            peer = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1));
            if (peer == NULL) goto error;
            int seen = PySequence_Contains(full, peer);
            if (seen < 0) {
                Py_DECREF(peer);
                goto error;
            }
            if (seen) err = EAGAIN; /* rc stays -2: not sent */
        }
        if (err == 0) {
            rc = send_message(socks[port], PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2),
                              &err);
            if (rc == -2 && err == EAGAIN) {
                if (peer == NULL)
                    peer = PyTuple_Pack(2, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1));
                if (full == NULL) full = PyList_New(0);
                if (peer == NULL || full == NULL || PyList_Append(full, peer) < 0) rc = -1;
            }
        }
        Py_XDECREF(peer);
        if (rc == -1) goto error;
        if (rc == -2) {
            if (err != EHOSTUNREACH && err != EAGAIN) {
                set_errno_error(err);
                goto error;
            }
            if (failed == NULL && (failed = PyList_New(0)) == NULL) goto error;
            PyObject *entry = Py_BuildValue("(ni)", i, err);
            if (entry == NULL || PyList_Append(failed, entry) < 0) {
                Py_XDECREF(entry);
                goto error;
            }
            Py_DECREF(entry);
        }
    }
    Py_DECREF(seq);
    Py_XDECREF(full);
    if (failed == NULL) return PyTuple_New(0); /* the empty tuple: a shared object */
    return failed;
error:
    Py_DECREF(seq);
    Py_XDECREF(failed);
    Py_XDECREF(full);
    return NULL;
}

/* send_message(handle, frames) -> True once the whole message is queued, False when the socket
 * could not take it without waiting (EAGAIN: the queue is full; nothing of it was sent, as libzmq
 * checks the high-water mark at a message's first frame) or had no peer for it (EHOSTUNREACH);
 * the error type of load() on any other failure. A client's send: one socket, one message, where
 * send_batch would need an outbox built around it (and a Python frame to build it) per request. */
static PyObject *fastio_send_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_message(handle, frames)");
        return NULL;
    }
    REQUIRE_LOADED();
    void *sock = socket_handle(args[0]);
    if (sock == NULL) return NULL;
    PyObject *seq = PySequence_Fast(args[1], "frames must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a message needs at least one frame");
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int err = 0, rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++)
        rc = send_part(sock, items[i], ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0), &err);
    Py_DECREF(seq);
    if (rc == -1) return NULL;
    if (rc == -2) {
        if (err == EAGAIN || err == EHOSTUNREACH) Py_RETURN_FALSE;
        return set_errno_error(err);
    }
    Py_RETURN_TRUE;
}

/* poll(sockets, fds, timeout_ms, out=0) -> a mask: bit i for sockets[i] (a handle) with a message
 * to read, bit len(sockets) + j for fds[j] readable; 0 when the timeout passed (-1: no timeout) or
 * a signal came (its Python handler has run by then). Bit i of ``out`` watches sockets[i] for
 * POLLOUT too, reported as bit len(sockets) + len(fds) + i.
 *
 * The broker's wait, once or twice a job at low concurrency: pyzmq's zmq_poll builds and walks
 * Python lists and tuples on each call (about a microsecond a turn, measured in the broker's
 * profile); this builds the items on the stack and answers with an int. */
static PyObject *fastio_poll(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if ((nargs != 3 && nargs != 4) || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "poll(sockets: tuple, fds: tuple, timeout_ms: int, out: int = 0)");
        return NULL;
    }
    REQUIRE_LOADED();
    Py_ssize_t nsocks = PyTuple_GET_SIZE(args[0]), nfds = PyTuple_GET_SIZE(args[1]);
    if (nsocks + nfds > POLL_MAX) {
        PyErr_Format(PyExc_ValueError, "poll() takes at most %d items", POLL_MAX);
        return NULL;
    }
    long timeout = PyLong_AsLong(args[2]);
    if (timeout == -1 && PyErr_Occurred()) return NULL;
    long out = 0;
    if (nargs == 4 && (out = PyLong_AsLong(args[3])) == -1 && PyErr_Occurred()) return NULL;
    zmq_pollitem_t items[POLL_MAX];
    int n = 0;
    for (Py_ssize_t i = 0; i < nsocks; i++, n++) {
        if ((items[n].socket = socket_handle(PyTuple_GET_ITEM(args[0], i))) == NULL) return NULL;
        items[n].fd = 0;
        items[n].events = ZMQ_POLLIN | ((out >> i) & 1 ? ZMQ_POLLOUT : 0);
        items[n].revents = 0;
    }
    for (Py_ssize_t j = 0; j < nfds; j++, n++) {
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(args[1], j));
        if (fd == -1 && PyErr_Occurred()) return NULL;
        items[n].socket = NULL;
        items[n].fd = (int)fd;
        items[n].events = ZMQ_POLLIN;
        items[n].revents = 0;
    }
    /* A signal that came while compiled code ran (no bytecode boundary since: its handler has
     * not run yet) must not wait out a blocking poll: Ctrl-C in a client waiting for a reply. */
    if (timeout != 0 && PyErr_CheckSignals() < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = p_poll(items, n, timeout);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        int e = p_errno();
        if (e != EINTR) return set_errno_error(e);
        if (PyErr_CheckSignals() < 0) return NULL; /* a handler raised */
        return PyLong_FromLong(0);
    }
    long mask = 0;
    for (int k = 0; k < n; k++)
        if (items[k].revents & ZMQ_POLLIN) mask |= 1L << k;
    for (int k = 0; k < nsocks; k++)
        if (items[k].revents & ZMQ_POLLOUT) mask |= 1L << (n + k);
    return PyLong_FromLong(mask);
}

static PyMethodDef fastio_methods[] = {
    {"poll", (PyCFunction)(void (*)(void))fastio_poll, METH_FASTCALL,
     "poll(sockets, fds, timeout_ms) -> mask of the readable items (sockets first, then fds); "
     "0 on timeout or a signal. Waits without the GIL."},
    {"load", fastio_load, METH_VARARGS,
     "load(path, error_type=None): bind to the libzmq of the already loaded pyzmq backend at "
     "path; libzmq failures raise error_type(errno) (OSError until given)."},
    {"recv_message", fastio_recv_message, METH_O,
     "recv_message(handle) -> the next whole message, every frame bytes, or None (no wait)."},
    {"recv_batch", (PyCFunction)(void (*)(void))fastio_recv_batch, METH_FASTCALL | METH_KEYWORDS,
     "recv_batch(handle, max, with_user_id=False, max_frames=0, with_peer_address=False) -> "
     "up to max whole messages, without blocking; with_user_id makes each item a (frames, "
     "User-Id or None) pair, with_peer_address a (frames, User-Id, Peer-Address) triple; "
     "max_frames > 0 keeps that many frames of a longer message and discards the rest."},
    {"send_message", (PyCFunction)(void (*)(void))fastio_send_message, METH_FASTCALL,
     "send_message(handle, frames) -> True if the message was queued, False if the socket "
     "could not take it without waiting (nothing was sent)."},
    {"send_batch", (PyCFunction)(void (*)(void))fastio_send_batch, METH_FASTCALL,
     "send_batch(handles, outbox) -> [(index, errno)] of the (port, identity, frames) items "
     "that met EHOSTUNREACH or EAGAIN (not sent), () if none; the error type of load() on any "
     "other failure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastio_module = {
    PyModuleDef_HEAD_INIT, "zmqserver._fastio",
    "Batched, zero-copy socket I/O for the broker's hot path (see _io.py).", -1, fastio_methods,
};

PyMODINIT_FUNC PyInit__fastio(void) {
    if (PyType_Ready(&FrameType) < 0) return NULL;
    PyObject *module = PyModule_Create(&fastio_module);
    if (module == NULL) return NULL;
    Py_INCREF(&FrameType);
    if (PyModule_AddObject(module, "Frame", (PyObject *)&FrameType) < 0) {
        Py_DECREF(&FrameType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "INLINE_MAX", INLINE_MAX) < 0 ||
        PyModule_AddStringConstant(module, "ZMQ_HEADER_VERSION",
                                   Py_STRINGIFY(ZMQ_VERSION_MAJOR) "." Py_STRINGIFY(
                                       ZMQ_VERSION_MINOR) "." Py_STRINGIFY(ZMQ_VERSION_PATCH)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
