/*
** venus-pzem: "are you sure?" before a request that changes a meter or the adapter.
**
**     PzemMeters_Confirmer { id: confirmer }
**     confirmer.ask({ "title": ..., "description": ..., "confirmedAction": function() { ... } })
**
** Asked from another dialog's result (the number picker), it waits until that dialog is gone:
** gui-v2's dialog layer holds one dialog and, when a dialog closes, destroys whichever is current.
*/

import QtQuick
import QtQuick.Templates as T
import Victron.VenusOS

QtObject {
	id: root

	property var _pending: null

	function ask(properties) {
		if (Global.dialogLayer.currentDialog) {
			_pending = properties
		} else {
			Global.dialogLayer.open(dialog, properties)
		}
	}

	property Connections _layer: Connections {
		target: Global.dialogLayer
		function onCurrentDialogChanged() {
			if (!Global.dialogLayer.currentDialog && root._pending) {
				const properties = root._pending
				root._pending = null
				Qt.callLater(Global.dialogLayer.open, dialog, properties)
			}
		}
	}

	property Component dialog: Component {
		ModalWarningDialog {
			id: confirmDialog

			property var confirmedAction

			dialogDoneOptions: VenusOS.ModalDialog_DoneOptions_OkAndCancel
			onClosed: {
				if (result === T.Dialog.Accepted && confirmDialog.confirmedAction) {
					confirmDialog.confirmedAction()
				}
			}
		}
	}
}
