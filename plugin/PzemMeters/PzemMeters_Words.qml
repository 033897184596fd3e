/*
** venus-pzem: the page's sentences about a meter, a port and a request, in one place.
** (A QML file, not a .js library: gui-v2's plugin compiler gives lupdate the .qml files only.)
*/

import QtQuick

QtObject {
	// /Meters/<address>/State: 0 answering, 1 not answering now, 2 named by the map but never
	// answered, 3 answers but cannot be published as the map says.
	function meterState(state, reason) {
		switch (state) {
		case 0:
			//% "Answering"
			return qsTrId("pzem_meters_state_answering")
		case 1:
			//% "Not answering (%1)"
			return qsTrId("pzem_meters_state_silent").arg(reason)
		case 2:
			//% "In the map, has not answered yet"
			return qsTrId("pzem_meters_state_waiting")
		case 3:
			//% "Answers, but is not published (%1)"
			return qsTrId("pzem_meters_state_unusable").arg(reason)
		}
		return ""
	}

	function errors(noReply, badFrame, exception, implausible) {
		//% "%1 without reply, %2 garbled, %3 refused, %4 implausible"
		return qsTrId("pzem_meters_errors").arg(noReply || 0).arg(badFrame || 0)
				.arg(exception || 0).arg(implausible || 0)
	}

	// /Action/State: 1 running, 2 done, 3 failed; /Action/Message is the driver's own sentence.
	function request(state, message) {
		switch (state) {
		case 1:
			//% "Working: %1"
			return qsTrId("pzem_meters_request_running").arg(message)
		case 2:
			//% "Done: %1"
			return qsTrId("pzem_meters_request_done").arg(message)
		case 3:
			//% "Not done: %1"
			return qsTrId("pzem_meters_request_failed").arg(message)
		}
		return ""
	}

	function number(value, decimals, unit) {
		return (value === undefined || value === null) ? "--" : value.toFixed(decimals) + " " + unit
	}
}
