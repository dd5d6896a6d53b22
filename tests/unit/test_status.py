"""The status pipe from a remote pool's workers to their master (status.py), without forking."""

from __future__ import annotations

import os
import sys

from zmqserver.status import Report, StatusChannel, StatusWriter


def test_reports_arrive_in_order_with_the_writers_pid():
    channel = StatusChannel()
    try:
        writer = StatusWriter(channel.write_fd)
        writer(Report.CONNECTING)
        writer(Report.IDLE)
        writer(Report.BUSY)
        writer(Report.IDLE)
        pid = os.getpid()
        assert channel.read() == [
            (pid, Report.CONNECTING),
            (pid, Report.IDLE),
            (pid, Report.BUSY),
            (pid, Report.IDLE),
        ]
        assert channel.read() == []  # nothing new: never blocks
    finally:
        channel.close()


def test_a_repeated_report_is_not_written_again():
    channel = StatusChannel()
    try:
        writer = StatusWriter(channel.write_fd)
        for _ in range(3):
            writer(Report.IDLE)
        assert len(channel.read()) == 1
    finally:
        channel.close()


def test_partial_records_wait_for_their_rest_and_garbage_is_skipped():
    channel = StatusChannel()
    try:
        record = (1234).to_bytes(4, sys.byteorder)
        os.write(channel.write_fd, record[:3])
        assert channel.read() == []
        os.write(channel.write_fd, record[3:] + bytes([Report.BUSY]))
        assert channel.read() == [(1234, Report.BUSY)]
        os.write(channel.write_fd, record + bytes([99]))  # not a report
        assert channel.read() == []
    finally:
        channel.close()


def test_a_full_pipe_drops_the_report_and_the_next_change_is_written():
    channel = StatusChannel()
    try:
        writer = StatusWriter(channel.write_fd)
        # Fill the pipe the way a master that stopped reading would, with whole records that
        # are not reports (pid 0, report 0): big writes first, then single records.
        for size in (5 * 800, 5):
            while True:
                try:
                    os.write(channel.write_fd, b"\0" * size)
                except BlockingIOError:
                    break
        writer(Report.BUSY)  # dropped: the worker never blocks on its master
        assert writer.last is None
        while channel.read():
            pass
        writer(Report.BUSY)
        assert channel.read() == [(os.getpid(), Report.BUSY)]
    finally:
        channel.close()
